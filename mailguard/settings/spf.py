"""`[spf]`: what each SPF result (RFC 7208) leads to (see docs/spf.md).

Whether the check runs, and whether a "reject" is acted on, is `[checks.spf]` (off unless
set; "log" records headers and never refuses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mailguard.settings.base import Invalid

# "tag": record the result in the headers only; "reject": 550 (5.7.23 / 5.7.24);
# "tempfail": 451 (4.7.23 / 4.7.24), the client retries later
Action = Literal["tag", "reject", "tempfail"]


@dataclass(frozen=True)
class SpfConfig:
    fail: Action = "tag"  # "-all" matched: the domain says this client may not send for it
    softfail: Action = "tag"  # "~all": probably not authorised
    neutral: Action = "tag"  # "?all": the domain makes no statement
    none: Action = "tag"  # no SPF record
    permerror: Action = "tag"  # a broken record
    temperror: Action = "tag"  # DNS failed or timed out ("tempfail" makes the client retry)
    query_time_s: float = 20.0  # all DNS lookups of one evaluation (RFC 7208 4.6.4: 20 s)

    def validate(self) -> None:
        if self.query_time_s <= 0:
            raise Invalid("query_time_s", f"must be > 0, got {self.query_time_s}")

    def action(self, result: str) -> Action:
        """The configured action for a result; "pass" is always "tag"."""
        value: Action = getattr(self, result, "tag") if result in _RESULTS else "tag"
        return value


_RESULTS = frozenset({"fail", "softfail", "neutral", "none", "permerror", "temperror"})
