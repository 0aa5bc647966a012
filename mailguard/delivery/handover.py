"""The two hand-overs behind the Delivery interface: the embedded Maildir spool and the
real qmail-queue. Both answer 250 only once the message is safely stored; a local fault
is a 451 (never a 5xx), a refusal by the queue program keeps qmail-smtpd's reply."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from mailguard.clock import Clock
from mailguard.delivery.base import Delivered
from mailguard.delivery.maildir import MaildirSpool
from mailguard.errors import PermanentError, TemporaryError
from mailguard.qmail.queue import run_qmail_queue
from mailguard.verdict import Reply

log = logging.getLogger("mailguard.delivery")

SPOOL_FAILED = Reply(451, "qq write error or disk full (#4.3.0)")


class MaildirDelivery:
    """Delivery into `<root>/<domain>/<user>/new`, fsynced before the 250."""

    def __init__(self, spool: MaildirSpool, clock: Clock) -> None:
        self._spool = spool
        self._clock = clock

    async def deliver(self, sender: str, rcpts: Sequence[str], message: bytes, *,
                      authenticated: bool = False) -> Delivered:
        try:
            queue_id = await self._spool.deliver(message, sender, rcpts)
        except (TemporaryError, PermanentError, OSError) as exc:
            log.error("event=delivery_failed method=maildir error=%r", str(exc))
            return Delivered(False, SPOOL_FAILED)
        return Delivered(True, Reply(250, f"ok {int(self._clock.now())} qp {queue_id}"), queue_id)


class QmailQueueDelivery:
    """Delivery through a program with qmail-queue's fd 0 / fd 1 protocol."""

    def __init__(
        self,
        program: Sequence[str],
        clock: Clock,
        *,
        timeout_s: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._program = list(program)
        self._clock = clock
        self._timeout_s = timeout_s
        self._env = env

    async def deliver(self, sender: str, rcpts: Sequence[str], message: bytes, *,
                      authenticated: bool = False) -> Delivered:
        result = await run_qmail_queue(
            self._program,
            message,
            sender,
            rcpts,
            timeout_s=self._timeout_s,
            env=self._env,
            clock=self._clock,
        )
        if result.queued:
            return Delivered(True, result.reply, str(result.pid), result.exit_code)
        log.warning(
            "event=delivery_failed method=qmail-queue exit=%d reply=%r",
            result.exit_code,
            str(result.reply),
        )
        return Delivered(False, result.reply, exit_code=result.exit_code)
