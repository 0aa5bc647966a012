"""Plain records passed to and from the store.

No SQLAlchemy here: the lean per-connection entry points import these types and
must start in a few tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One SMTP transaction as it ended, for the message log.

    `outcome` is one of "accepted", "rejected", "tempfail", "error" (free text so a
    new outcome needs no schema change); `verdicts` is the compact text of the
    check results (e.g. "dnsbl=pass greylist=defer").
    """

    ts: float  # epoch seconds when the transaction ended
    session_id: str
    client_ip: str
    helo: str
    mail_from: str
    rcpts: tuple[str, ...]
    size: int  # octets
    outcome: str
    reply_code: int
    queue_id: str
    duration_ms: int
    verdicts: str
    # for the statistics (store.stats): "in" (from outside), "out" (an authenticated
    # user), "relay" (a relay client by address); per recipient of an accepted message
    # what happened ("delivered=2,quarantined=1"); the MX host ("" = this one)
    direction: str = ""
    dispositions: str = ""
    host: str = ""
