"""`[stats]`: how long the mail-flow statistics and the message log are kept
(docs/monitoring.md). Each resolution has its own retention, like MRTG's round robin."""

from __future__ import annotations

from dataclasses import dataclass

from mailguard.settings.base import Invalid


@dataclass(frozen=True)
class StatsConfig:
    five_min_days: float = 2  # 5-minute buckets (the day view)
    hourly_days: float = 62  # hourly buckets (week and month views, per-user usage)
    daily_days: float = 730  # daily buckets (year view, monthly usage)
    message_log_days: float = 7  # one row per transaction (`mailguard log`)
    purge_every_s: float = 3600  # how often the daemon purges what is older

    def validate(self) -> None:
        for key in ("five_min_days", "hourly_days", "daily_days", "message_log_days",
                    "purge_every_s"):
            if getattr(self, key) <= 0:
                raise Invalid(key, f"must be > 0, got {getattr(self, key)}")
