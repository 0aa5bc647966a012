"""The `queue` op: the daemon's half of the QMAILQUEUE wrapper (`mailguard queue`).

The wrapper hands over its fd 0 (the message) and fd 1 (the envelope); we read them as
qmail-queue does (message to EOF, then the envelope), run the same DATA and QUEUE
stages as mail the daemon accepts over SMTP (scanners, dispositions; the hand-over is
the real qmail-queue) and answer the exit status the wrapper must exit with, so that its
caller (qmail-smtpd, qmail-inject…) sees what it would see from qmail-queue. The message
gets the same summary line and `message_log` row as one from an SMTP session."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import stat
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from mailguard.body import DEFAULT_DIR, Body, Spooler
from mailguard.clock import Clock
from mailguard.config import ServerConfig
from mailguard.context import Session, Transaction
from mailguard.control.environ import env_from, qmail_ulong
from mailguard.control.server import Reply, protocol_close
from mailguard.delivery.base import Delivered
from mailguard.frontend.conversation import unique_rcpts
from mailguard.metrics import Metrics
from mailguard.netaddr import plain_ip
from mailguard.qmail.envelope import EnvelopeError, parse
from mailguard.qmail.exitcodes import (
    EX_CUSTOM,
    EX_PERM_REFUSED,
    EX_READ_ERROR,
    EX_TEMP_REFUSED,
    EX_WRITE_ERROR,
)
from mailguard.qmail.replies import DATABYTES
from mailguard.scanning.stage import QueueStage
from mailguard.settings.queue import QueueConfig
from mailguard.store.records import MessageRecord
from mailguard.summary import log_transaction
from mailguard.verdict import Action, Stage
from mailguard.verdict import Reply as SmtpReply

log = logging.getLogger("mailguard.queue")

QUEUE_METRIC = "mailguard_queue_messages_total"
DEADLINE = SmtpReply(451, "mail filter timed out, try again later", "4.3.0")
# qmail-queue has no exit status for "too big": a permanent refusal (31, or 82 with this
# text, which qmail-smtpd answers as 554 <text>), in qmail-smtpd's words for databytes.
TOO_BIG = DATABYTES
# More distinct recipients than `[server] max_rcpts` from qmail-smtpd (which has no
# limit): permanent, as a retry carries the same envelope (31, or 82 + D<text>).
TOO_MANY_RCPTS = SmtpReply(554, "too many recipients", "5.5.3")


class TooBig(Exception):
    """The message is longer than the limit; reading stopped there."""


class SpoolFailed(Exception):
    """The message could not be written to its spool file (disk full): qmail-queue's
    exit 53, "write error or disk full"."""


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


def _no_record(_: MessageRecord) -> None:
    """Used when no store is attached."""


def session_from(env: Mapping[str, str], clock: Clock) -> Session:
    """What qmail-smtpd's environment tells about the client (nothing for local mail)."""
    try:
        ip = plain_ip(ipaddress.ip_address(env.get("TCPREMOTEIP", "").strip()))
    except ValueError:
        ip = ipaddress.ip_address("127.0.0.1")  # local injection: qmail-inject and friends
    port = env.get("TCPREMOTEPORT", "")
    return Session(
        client_ip=ip,
        client_port=int(port) if port.isdigit() else 0,
        clock=clock,
        client_host=env.get("TCPREMOTEHOST", ""),
        local_ip=env.get("TCPLOCALIP", ""),
        relay_client="RELAYCLIENT" in env,
        env=env,
        session_id=secrets.token_hex(6),
    )


class QueueOp:
    """Handler of `queue` requests: the DATA and QUEUE stages of `stage`'s pipeline, then
    its hand-over. `[queue] scan_sources` says which sources get the QUEUE checks.
    `server`: the SMTP limits. The longest message taken is the session's: `DATABYTES`
    of the caller's environment (tcp.smtp, passed on by qmail-smtpd), else
    `server.databytes`; 0 there means `server.max_message_bytes` (0: none). Reading
    stops past it, so no more is ever held. `server.max_rcpts`: the most distinct
    recipients of a message from qmail-smtpd (source `smtp`); repeated recipients are
    dropped from every envelope. `spooler`: where a message bigger than
    `server.spool_threshold_bytes` is received (default: `server.spool_dir`, else
    /var/tmp)."""

    def __init__(self, stage: QueueStage, cfg: QueueConfig, clock: Clock, *,
                 server: ServerConfig,
                 metrics: Metrics | None = None,
                 record: Callable[[MessageRecord], None] = _no_record,
                 spooler: Spooler | None = None) -> None:
        self._stage = stage
        self._server = server
        self._spooler = spooler or Spooler(server.spool_dir or DEFAULT_DIR,
                                           server.spool_threshold_bytes)
        self._max_rcpts = server.max_rcpts
        self._cfg = cfg
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._record = record
        self._metrics.declare(QUEUE_METRIC, "counter",
                              "messages from the QMAILQUEUE wrapper by source and scanning")

    async def __call__(self, request: dict[str, Any], fds: list[int], reply: Reply) -> None:
        if len(fds) != 2:
            protocol_close(fds)
            await reply({"error": "expected two descriptors: message and envelope"})
            return
        # Acknowledge first: the wrapper exits 71 when it does not get this within 5 s (a
        # hung daemon) and has then closed the connection: its caller retries, so this
        # copy must not be queued.
        if not await reply({"taken": True}):
            protocol_close(fds)
            log.warning("event=queue_error error=%r", "the wrapper gave up before the "
                        "daemon took the message")
            return
        env = env_from(request)
        custom = bool(request.get("fd6")) and self._cfg.custom_fd6
        source = source_of(env)
        scanned = source in self._cfg.scan_sources and self._stage.pipeline.runs(Stage.QUEUE)
        started = self._clock.monotonic()
        session = session_from(env, self._clock)
        try:
            async with asyncio.timeout(self._cfg.deadline_s):
                code, text = await self._run(session, fds[0], fds[1], custom=custom,
                                             scanned=scanned, started=started)
        except TimeoutError:
            code, text = exit_status(Delivered(False, DEADLINE), custom=custom)
            tx = session.transaction
            if tx is not None:
                self._log(session, tx, Delivered(False, DEADLINE), started,
                          extra=(("source", source), ("scanned", "yes" if scanned else "no"),
                                 ("exit", str(code))))
        finally:
            protocol_close(fds)
        self._metrics.inc(QUEUE_METRIC, source=source, scanned="yes" if scanned else "no")
        await reply({"exit": code, "text": text})

    def max_bytes(self, env: Mapping[str, str]) -> int | None:
        """The size limit for this caller, None = none (as a drop-in session's: a
        per-client DATABYTES replaces `databytes`, read as qmail's scan_ulong)."""
        server = self._server
        databytes = qmail_ulong(env["DATABYTES"]) if "DATABYTES" in env else server.databytes
        return databytes or server.max_message_bytes or None

    async def _run(self, session: Session, msg_fd: int, env_fd: int, *, custom: bool,
                   scanned: bool, started: float) -> tuple[int, str]:
        limit = self.max_bytes(session.env)
        try:
            message = await read_body(msg_fd, limit, self._spooler)
        except SpoolFailed as exc:
            log.error("event=queue_error error=%r", f"message spool: {exc}")
            return EX_WRITE_ERROR, ""
        except TooBig:
            # The envelope is not read: the writer is still blocked on the message.
            log.warning("event=queue_refused source=%s error=%r", source_of(session.env),
                        f"message longer than {limit} bytes")
            return exit_status(Delivered(False, TOO_BIG), custom=custom)
        except OSError as exc:
            log.warning("event=queue_error error=%r", "message read: " + str(exc))
            return EX_READ_ERROR, ""
        try:  # the message (possibly a spool file) is released however this ends
            return await self._run_with(session, message, env_fd, custom=custom,
                                        scanned=scanned, started=started)
        finally:
            message.close()

    async def _run_with(self, session: Session, message: Body, env_fd: int, *,
                        custom: bool, scanned: bool, started: float) -> tuple[int, str]:
        try:
            raw = await read_all(env_fd)
        except OSError as exc:
            log.warning("event=queue_error error=%r", "envelope read: " + str(exc))
            return EX_READ_ERROR, ""
        try:
            envelope = parse(raw)
        except EnvelopeError as exc:
            log.warning("event=queue_error error=%r", exc.reason)
            return exc.exit_code, ""
        # One copy per recipient, as over SMTP (qmail-queue would queue repeats as given)
        tx = Transaction(envelope.sender_str, rcpts=unique_rcpts(envelope.rcpts_str),
                         body=message, size=message.size)
        session.transaction = tx
        if source_of(session.env) == "smtp" and len(tx.rcpts) > self._max_rcpts:
            # Local programs are not limited: a list manager sends one message to every
            # subscriber through qmail-queue.
            delivered = Delivered(False, TOO_MANY_RCPTS)
        else:
            delivered = await self._stages(session, tx, message, scanned)
        code, text = exit_status(delivered, custom=custom)
        self._log(session, tx, delivered, started,
                  extra=(("source", source_of(session.env)),
                         ("scanned", "yes" if scanned else "no"), ("exit", str(code))))
        return code, text

    async def _stages(self, session: Session, tx: Transaction, message: Body,
                      scanned: bool) -> Delivered:
        """DATA checks as for SMTP (qmail-smtpd ran the connection's own), then the
        QUEUE stage."""
        verdict = await self._stage.pipeline.run(Stage.DATA, session)
        if verdict.action in (Action.TEMPFAIL, Action.REJECT):
            refusal = verdict.reply or SmtpReply(451, "temporarily refused", "4.7.1")
            return Delivered(False, refusal)
        return await self._stage.process(session, tx, message, scan=scanned)

    def _log(self, session: Session, tx: Transaction, delivered: Delivered,
             started: float, *, extra: tuple[tuple[str, str], ...]) -> None:
        if delivered.accepted:
            outcome = "accepted"
        else:
            outcome = "tempfail" if delivered.reply.temporary else "rejected"
        log_transaction(session, tx, outcome=outcome, code=delivered.reply.code,
                        queue_id=delivered.queue_id if delivered.accepted else "",
                        started=started, clock=self._clock, metrics=self._metrics,
                        record=self._record,
                        extra=extra)


async def read_all(fd: int, limit: int | None = None) -> bytes:
    """Read `fd` to EOF without blocking the loop (the envelope; `read_body` for the
    message). More than `limit` bytes → TooBig, having read at most one byte past it."""
    async with contextlib.aclosing(_pieces(fd, limit)) as pieces:
        return b"".join([piece async for piece in pieces])


async def read_body(fd: int, limit: int | None, spooler: Spooler) -> Body:
    """`read_all` into a Body: in memory up to the spooler's threshold, in a spool file
    beyond. SpoolFailed when the disk fails; TooBig as read_all (nothing is kept)."""
    writer = spooler.writer()
    buf = bytearray()
    try:
        async with contextlib.aclosing(_pieces(fd, limit)) as pieces:
            async for piece in pieces:
                buf += piece
                if len(buf) >= writer.flush_at():
                    await writer.flush(buf)
                    if writer.error is not None:
                        raise SpoolFailed(str(writer.error))
        try:
            return await writer.finish(buf)
        except OSError as exc:
            raise SpoolFailed(str(exc)) from None
    except BaseException:
        writer.discard()
        raise


async def _pieces(fd: int, limit: int | None) -> AsyncGenerator[bytes, None]:
    """`fd` to EOF, in pieces, without blocking the loop: pipes and sockets are polled
    (their blocking mode restored afterwards: the description is shared with the
    wrapper), regular files — which cannot be polled — are read in a worker thread."""
    loop = asyncio.get_running_loop()
    size = 0
    if stat.S_ISREG(os.fstat(fd).st_mode):
        while chunk := await loop.run_in_executor(None, os.read, fd,
                                                  _want(size, limit, 1 << 20)):
            size += len(chunk)
            if limit is not None and size > limit:
                raise TooBig
            yield chunk
        return
    was_blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        while True:
            try:
                chunk = os.read(fd, _want(size, limit, 1 << 16))
            except BlockingIOError:
                await _readable(loop, fd)
                continue
            if not chunk:
                return
            size += len(chunk)
            if limit is not None and size > limit:
                raise TooBig
            yield chunk
    finally:
        os.set_blocking(fd, was_blocking)


def _want(size: int, limit: int | None, chunk: int) -> int:
    """How much to read next: never more than one byte past `limit`."""
    return chunk if limit is None else max(1, min(chunk, limit + 1 - size))


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
