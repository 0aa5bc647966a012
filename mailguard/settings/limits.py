"""`[tarpit]` (per connection, as qmail's tarpit patch) and `[limits]` (per sending user,
across connections and MX hosts: sliding windows, progressive delay, hard limit, admin
alert, optional suspension). Standard library only: the lean entry points load it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from mailguard.settings.base import Invalid

# RFC 5321 4.5.3.2: clients wait at least 5 minutes for the reply to MAIL and RCPT; a
# deliberate delay longer than that only makes them hang up.
MAX_DELAY_S = 300


def describe_period(period_s: int) -> str:
    """3600 → "hour", 7200 → "2 hours", 86400 → "day", 90 → "90 seconds"."""
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if period_s % unit == 0:
            n = period_s // unit
            return name if n == 1 else f"{n} {name}s"
    return f"{period_s} seconds"


@dataclass(frozen=True)
class TarpitConfig:
    """Per-connection tarpit. Unset values come from qmail's control files `tarpitcount`
    and `tarpitdelay` (when `server.qmail_control_dir` is set), else 0 (off) and 5 s.
    In drop-in mode the tcpserver environment's TARPITCOUNT/TARPITDELAY win."""

    count: int | None = None  # RCPTs accepted in a connection before delays start; 0 = off
    delay_s: int | None = None  # seconds slept before answering each further RCPT

    def validate(self) -> None:
        if self.count is not None and self.count < 0:
            raise Invalid("count", f"must be >= 0, got {self.count}")
        if self.delay_s is not None and not 0 <= self.delay_s <= MAX_DELAY_S:
            raise Invalid("delay_s", f"must be 0..{MAX_DELAY_S} (RFC 5321 client timeout), "
                          f"got {self.delay_s}")

    def filled(self, count: int, delay_s: int) -> TarpitConfig:
        """Unset values replaced by these (the control files', then the defaults)."""
        return replace(
            self,
            count=self.count if self.count is not None else count,
            delay_s=self.delay_s if self.delay_s is not None else min(delay_s, MAX_DELAY_S),
        )


@dataclass(frozen=True)
class WindowLimit:
    """One sliding window. Up to `soft_*` is free; past it each further message (at MAIL)
    or recipient (at RCPT) is delayed; past `hard_*` the user gets 451 4.7.1 until the
    window frees. 0 = no limit of that kind."""

    period_s: int
    soft_messages: int = 0
    hard_messages: int = 0
    soft_rcpts: int = 0
    hard_rcpts: int = 0

    def check(self, index: int) -> None:
        key = f"windows[{index}]"
        if self.period_s <= 0:
            raise Invalid(f"{key}.period_s", f"must be > 0, got {self.period_s}")
        for kind in ("messages", "rcpts"):
            soft, hard = getattr(self, f"soft_{kind}"), getattr(self, f"hard_{kind}")
            if soft < 0 or hard < 0:
                raise Invalid(f"{key}.soft_{kind}", "limits must be >= 0 (0 = none)")
            if soft and hard and soft >= hard:
                raise Invalid(f"{key}.soft_{kind}",
                              f"must be below hard_{kind} ({soft} >= {hard})")


def _default_windows() -> tuple[WindowLimit, ...]:
    # A person writes a few dozen messages an hour at most; a hijacked account or a
    # spamming script thousands. Soft limits sit above the busiest normal user.
    return (
        WindowLimit(3600, soft_messages=60, hard_messages=200, soft_rcpts=300, hard_rcpts=1000),
        WindowLimit(86400, soft_messages=300, hard_messages=1000, soft_rcpts=1500,
                    hard_rcpts=5000),
    )


@dataclass(frozen=True)
class LimitsConfig:
    """Per-user outbound limits. The user is the SMTP AUTH name, else the envelope sender
    of a relay client, else the client IP. Counters live in the store."""

    windows: tuple[WindowLimit, ...] = field(default_factory=_default_windows)
    delay_min_s: int = 30  # delay of the first message/recipient past a soft limit
    delay_max_s: int = 240  # the delay grows with the excess up to this (at the hard limit)
    apply_to: Literal["relay", "all"] = "relay"  # relay = relay clients and AUTH users only
    alert_to: str = ""  # admin address for the one-per-incident alert; empty = no alerts
    alert_from: str = ""  # envelope sender and From: of alerts; empty = <> and mailguard@host
    alert_threshold: Literal["soft", "hard"] = "hard"  # which limit starts an incident
    realert_s: int = 0  # an incident ends this long after its alert; 0 = longest window
    suspend_on_alert: bool = False  # suspend the user when alerting (after the alert is sent)

    def validate(self) -> None:
        periods = [w.period_s for w in self.windows]
        for i, w in enumerate(self.windows):
            w.check(i)
        if len(set(periods)) != len(periods):
            raise Invalid("windows", "two windows have the same period_s")
        if not 0 <= self.delay_min_s <= self.delay_max_s:
            raise Invalid("delay_min_s", f"must be 0..delay_max_s, got {self.delay_min_s}")
        if self.delay_max_s > MAX_DELAY_S:
            raise Invalid("delay_max_s", f"must be <= {MAX_DELAY_S} (RFC 5321 client timeout), "
                          f"got {self.delay_max_s}")
        if self.realert_s < 0:
            raise Invalid("realert_s", f"must be >= 0, got {self.realert_s}")
        for key in ("alert_to", "alert_from"):
            value = getattr(self, key)
            if value and ("@" not in value or any(c in value for c in " <>\r\n")):
                raise Invalid(key, f"must be a plain address like admin@example.com, "
                              f"got {value!r}")
        if self.suspend_on_alert and not self.alert_to:
            raise Invalid("suspend_on_alert", "needs alert_to: the admin is always told first")

    @property
    def longest_s(self) -> int:
        return max((w.period_s for w in self.windows), default=0)

    @property
    def incident_s(self) -> int:
        """How long after an alert a new crossing counts as a new incident."""
        return self.realert_s or self.longest_s
