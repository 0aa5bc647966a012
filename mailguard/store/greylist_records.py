"""Greylisting state as plain records (standard library only): what the pure decision
(`checks/greylist_rules.py`) reads and returns, and what `store/greylist.py` keeps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TripletState:
    """One (client key, sender, recipient) triplet. Times are epoch seconds."""

    first_seen: float  # the first try of the current attempt (reset after the retry window)
    last_seen: float
    passed_ts: float | None = None  # when a retry was first accepted; None = still pending
    deferrals: int = 0  # 451s given in the current attempt


@dataclass(frozen=True, slots=True)
class ClientState:
    """A client key's successful retries, for the auto-whitelist."""

    passes: int
    first_seen: float
    last_seen: float  # the last counted pass (or whitelisted message, hourly at most)


@dataclass(frozen=True, slots=True)
class TripletRow:
    """A triplet with its key, for `mailguard greylist list`."""

    client_key: str
    sender: str
    rcpt: str
    state: TripletState


@dataclass(frozen=True, slots=True)
class GreylistStats:
    triplets: int
    passed: int
    pending: int
    clients: int
    whitelisted: int
