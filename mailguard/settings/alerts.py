"""`[alerts]`: incidents mailed to the admin (docs/monitoring.md). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from mailguard.settings.base import Invalid


def plain_address(key: str, value: str) -> None:
    """Refuse anything but a bare address (no display name, no brackets, no spaces)."""
    if value and ("@" not in value or any(c in value for c in " <>,;\t\r\n")):
        raise Invalid(key, f"must be a plain address like admin@example.com, got {value!r}")


@dataclass(frozen=True)
class AlertsConfig:
    to: str = ""  # the admin's address; empty = incidents are recorded and logged, not mailed
    sender: str = ""  # envelope sender and From: of alert mail; empty = <> and mailguard@host
    remind_s: int = 3600  # while an incident lasts, one reminder per this many seconds
    # the daemon's watchdog (read at start): how often it looks at the daemon's metrics,
    check_s: int = 30
    scanner_down_s: int = 300  # a scanner whose scans keep failing this long: an incident
    handoff_failures: int = 5  # this many failed queue hand-offs ... (0 = off)
    handoff_window_s: int = 600  # ... within this many seconds: an incident

    def validate(self) -> None:
        plain_address("to", self.to)
        plain_address("sender", self.sender)
        if self.remind_s < 60:
            raise Invalid("remind_s", f"must be >= 60, got {self.remind_s}")
        if self.check_s <= 0:
            raise Invalid("check_s", f"must be > 0, got {self.check_s}")
        for key in ("scanner_down_s", "handoff_failures"):
            if getattr(self, key) < 0:
                raise Invalid(key, f"must be >= 0, got {getattr(self, key)}")
        if self.handoff_window_s <= 0:
            raise Invalid("handoff_window_s", f"must be > 0, got {self.handoff_window_s}")
