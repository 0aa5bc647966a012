"""Plain records of per-user outbound activity (no SQLAlchemy: the pure decisions and
the lean paths import these)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowCount:
    """What a user sent in the last `period_s` seconds."""

    period_s: int
    messages: int = 0
    rcpts: int = 0


@dataclass(frozen=True, slots=True)
class UserStatus:
    """A user's suspension and alert state (absent row = all defaults)."""

    user: str
    suspended: bool = False
    suspended_ts: float | None = None
    reason: str = ""
    last_alert_ts: float | None = None
    alerts: int = 0


@dataclass(frozen=True, slots=True)
class UserActivity:
    """One line of `mailguard user list`."""

    status: UserStatus
    counts: tuple[WindowCount, ...]


@dataclass(frozen=True, slots=True)
class UserDetail:
    """`mailguard user show` and the alert's content: counts, top recipient domains
    (domain, recipients) and the newest subjects (ts, subject)."""

    status: UserStatus
    counts: tuple[WindowCount, ...]
    top_domains: tuple[tuple[str, int], ...]
    subjects: tuple[tuple[float, str], ...]
