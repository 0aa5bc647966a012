"""`[qmail_watch]`: `mailguard qmail-watch`, the watch on qmail's own queue
(docs/monitoring.md). Standard library only."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mailguard.settings.base import Invalid

# the thresholds a reading is held against, by key (0 = that threshold is off)
THRESHOLDS = ("max_messages", "max_unprocessed", "max_oldest_age_s", "max_unprocessed_age_s")


@dataclass(frozen=True)
class QmailWatchConfig:
    queue_dir: str = "/var/qmail/queue"  # qmail's queue (mess/, info/, local/, remote/, todo/)
    max_messages: int = 10000  # messages in the queue (qmail-qstat's first line)
    max_unprocessed: int = 1000  # messages not yet preprocessed by qmail-send (todo/)
    max_oldest_age_s: int = 0  # age of the oldest message; 0 = off (qmail retries for 7 days)
    max_unprocessed_age_s: int = 900  # age of the oldest message still in todo/ (a stall)
    # run this (no shell; e.g. ["svc", "-t", "/service/qmail-send"]) when a threshold of
    # `restart_on` is passed, at most once per `restart_cooldown_s`; [] = never
    restart_command: tuple[str, ...] = ()
    restart_on: tuple[str, ...] = ("max_unprocessed", "max_unprocessed_age_s")
    restart_cooldown_s: int = 3600
    restart_timeout_s: int = 60  # the command is killed after this
    keep_readings_h: int = 24  # readings older than this are purged

    def validate(self) -> None:
        if not os.path.isabs(self.queue_dir):
            raise Invalid("queue_dir", f"must be an absolute path, got {self.queue_dir!r}")
        for key in THRESHOLDS:
            if getattr(self, key) < 0:
                raise Invalid(key, f"must be >= 0 (0 = off), got {getattr(self, key)}")
        for name in self.restart_on:
            if name not in THRESHOLDS:
                raise Invalid("restart_on", f"{name!r} is not one of {', '.join(THRESHOLDS)}")
        if self.restart_command and not self.restart_command[0]:
            raise Invalid("restart_command", "the program name is empty")
        if self.restart_cooldown_s < 60:
            raise Invalid("restart_cooldown_s", f"must be >= 60, got {self.restart_cooldown_s}")
        if self.restart_timeout_s <= 0:
            raise Invalid("restart_timeout_s", f"must be > 0, got {self.restart_timeout_s}")
        if self.keep_readings_h <= 0:
            raise Invalid("keep_readings_h", f"must be > 0, got {self.keep_readings_h}")
