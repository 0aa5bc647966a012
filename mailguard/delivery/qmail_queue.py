"""The Delivery through the real qmail-queue (or any program with its fd 0 / fd 1
protocol): a 250 only once the program queued the message; a refusal keeps the reply
qmail-smtpd would give for its exit status."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from mailguard.body import Message
from mailguard.clock import Clock
from mailguard.delivery.base import Delivered
from mailguard.qmail.queue_program import run_qmail_queue

log = logging.getLogger("mailguard.delivery")


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

    async def deliver(self, sender: str, rcpts: Sequence[str], message: Message, *,
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
