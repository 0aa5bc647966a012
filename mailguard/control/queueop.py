"""The `queue` op: the daemon's half of the QMAILQUEUE wrapper (`mailguard queue`).

The wrapper hands over its fd 0 (the message) and fd 1 (the envelope); we read them as
qmail-queue does (message to EOF, then the envelope), hand the message to the QUEUE
delivery (the real qmail-queue, wrapped by the scanning engine) and answer the exit
status the wrapper must exit with, so that its caller (qmail-smtpd, qmail-inject…) sees
what it would see from qmail-queue."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Mapping
from typing import Any

from mailguard.clock import Clock
from mailguard.control.server import Reply, protocol_close
from mailguard.control.session import env_from
from mailguard.delivery.base import Delivered, Delivery
from mailguard.metrics import Metrics
from mailguard.qmail.envelope import EnvelopeError, parse
from mailguard.qmail.exitcodes import EX_CUSTOM, EX_PERM_REFUSED, EX_READ_ERROR, EX_TEMP_REFUSED
from mailguard.settings.queue import QueueConfig
from mailguard.verdict import Reply as SmtpReply

log = logging.getLogger("mailguard.queue")

QUEUE_METRIC = "mailguard_queue_messages_total"
DEADLINE = SmtpReply(451, "mail filter timed out, try again later", "4.3.0")


def exit_status(delivered: Delivered, *, custom: bool) -> tuple[int, str]:
    """(exit status, fd-6 text) for the wrapper. `custom`: the caller opened fd 6 and
    `[queue] custom_fd6` is on, so a reply of our own can travel as exit 82 + D/Z<text>.

    - queued → 0;
    - the inner qmail-queue's own exit status → passed on unchanged (its 82 is re-sent
      with its text, or becomes 31/71 when the caller has no fd 6);
    - a refusal by mailguard itself (no exit status, or one a process cannot exit with:
      killed by a signal, waitpid surprise) → 31 / 71, or 82 + D<text> / Z<text>.
    """
    if delivered.accepted:
        return 0, ""
    code = delivered.exit_code
    if code is not None and 0 < code < 256 and code != EX_CUSTOM:
        return code, ""
    reply = delivered.reply
    if custom:
        text = "\n".join(line[4:] for line in reply.lines())
        return EX_CUSTOM, ("D" if reply.permanent else "Z") + text
    return (EX_PERM_REFUSED if reply.permanent else EX_TEMP_REFUSED), ""


def source_of(env: Mapping[str, str]) -> str:
    """"smtp" when the caller is qmail-smtpd (tcpserver set TCPREMOTEIP), else "local"
    (qmail-inject, qmail-local forwards, autoresponders, list managers)."""
    return "smtp" if "TCPREMOTEIP" in env else "local"


class QueueOp:
    """Handler of `queue` requests. `unscanned` is the plain hand-over (the real
    qmail-queue) for sources `[queue] scan_sources` leaves out; None = `delivery` does
    not scan anyway."""

    def __init__(self, delivery: Delivery, cfg: QueueConfig, clock: Clock, *,
                 unscanned: Delivery | None = None, metrics: Metrics | None = None) -> None:
        self._delivery = delivery
        self._unscanned = unscanned
        self._cfg = cfg
        self._clock = clock
        self._metrics = metrics
        if metrics is not None:
            metrics.declare(QUEUE_METRIC, "counter",
                            "messages from the QMAILQUEUE wrapper by source and scanning")

    async def __call__(self, request: dict[str, Any], fds: list[int], reply: Reply) -> None:
        if len(fds) != 2:
            protocol_close(fds)
            await reply({"error": "expected two descriptors: message and envelope"})
            return
        env = env_from(request)
        custom = bool(request.get("fd6")) and self._cfg.custom_fd6
        source = source_of(env)
        delivery = self._delivery
        scanned = self._unscanned is not None
        if scanned and source not in self._cfg.scan_sources:
            delivery, scanned = self._unscanned or delivery, False
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(self._cfg.deadline_s):
                code, text, summary = await self._run(delivery, fds[0], fds[1], custom)
        except TimeoutError:
            code, text = exit_status(Delivered(False, DEADLINE), custom=custom)
            summary = "deadline"
        finally:
            protocol_close(fds)
        log.info(
            "event=queue scanned=%s source=%s client=%s %s exit=%d duration_ms=%d",
            "yes" if scanned else "no",
            source,
            env.get("TCPREMOTEIP", "-"),
            summary,
            code,
            int((self._clock.monotonic() - started) * 1000),
        )
        if self._metrics is not None:
            self._metrics.inc(QUEUE_METRIC, source=source, scanned="yes" if scanned else "no")
        await reply({"exit": code, "text": text})

    async def _run(self, delivery: Delivery, msg_fd: int, env_fd: int,
                   custom: bool) -> tuple[int, str, str]:
        try:
            message = await read_all(msg_fd)
        except OSError as exc:
            return EX_READ_ERROR, "", f"error={'message read: ' + str(exc)!r}"
        try:
            raw = await read_all(env_fd)
        except OSError as exc:
            return EX_READ_ERROR, "", f"error={'envelope read: ' + str(exc)!r}"
        try:
            envelope = parse(raw)
        except EnvelopeError as exc:
            return exc.exit_code, "", f"error={exc.reason!r}"
        sender, rcpts = envelope.sender_str, list(envelope.rcpts_str)
        delivered = await delivery.deliver(sender, rcpts, message)
        code, text = exit_status(delivered, custom=custom)
        summary = (
            f"from=<{sender}> rcpts={','.join(rcpts) or '-'} size={len(message)} "
            f"reply={delivered.reply.code} queue_id={delivered.queue_id or '-'}"
        )
        return code, text, summary


async def read_all(fd: int) -> bytes:
    """Read `fd` to EOF without blocking the loop: pipes and sockets are polled (their
    blocking mode restored afterwards: the description is shared with the wrapper),
    regular files — which cannot be polled — are read directly."""
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return await asyncio.to_thread(_read_file, fd)
    loop = asyncio.get_running_loop()
    was_blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                await _readable(loop, fd)
                continue
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.set_blocking(fd, was_blocking)


def _read_file(fd: int) -> bytes:
    chunks: list[bytes] = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await fut
    finally:
        loop.remove_reader(fd)
