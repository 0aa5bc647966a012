"""`[queue]`: the QMAILQUEUE wrapper (`mailguard queue`) as the daemon runs it."""

from __future__ import annotations

from dataclasses import dataclass

from mailguard.settings.base import Invalid

# Where a message handed to the wrapper comes from: "smtp" = the caller had TCPREMOTEIP in
# its environment (qmail-smtpd under tcpserver); "local" = everything else (qmail-inject,
# sendmail, qmail-local forwards, autoresponders, mailing-list managers).
QUEUE_SOURCES = ("smtp", "local")


@dataclass(frozen=True)
class QueueConfig:
    # notqmail 1.09+: refusals by mailguard itself exit 82 with "D<text>"/"Z<text>" on fd 6
    # (when the caller opened fd 6), so the client sees the real reason; false: 31 / 71
    custom_fd6: bool = True
    # one deadline for reading, scanning and queueing a message; past it: exit 71. Keep it
    # below the SMTP client's DATA timeout (RFC 5321 4.5.3.2.6: 10 minutes)
    deadline_s: float = 300.0
    # the sources whose mail is scanned; mail from the others goes straight to the real
    # qmail-queue (logged `scanned=no`, counted in mailguard_queue_messages_total)
    scan_sources: tuple[str, ...] = QUEUE_SOURCES

    def validate(self) -> None:
        if self.deadline_s <= 0:
            raise Invalid("deadline_s", f"must be > 0, got {self.deadline_s}")
        for source in self.scan_sources:
            if source not in QUEUE_SOURCES:
                raise Invalid("scan_sources", f"{source!r} is not one of "
                              f"{', '.join(map(repr, QUEUE_SOURCES))}")
