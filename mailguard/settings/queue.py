"""`[queue]`: the QMAILQUEUE wrapper (`mailguard queue`) as the daemon runs it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueConfig:
    # notqmail 1.09+: refusals by mailguard itself exit 82 with "D<text>"/"Z<text>" on fd 6
    # (when the caller opened fd 6), so the client sees the real reason; false: 31 / 71
    custom_fd6: bool = True
    # one deadline for reading, scanning and queueing a message; past it: exit 71. Keep it
    # below the SMTP client's DATA timeout (RFC 5321 4.5.3.2.6: 10 minutes)
    deadline_s: float = 300.0

    def validate(self) -> None:
        from mailguard.config import Invalid  # noqa: PLC0415

        if self.deadline_s <= 0:
            raise Invalid("deadline_s", f"must be > 0, got {self.deadline_s}")
