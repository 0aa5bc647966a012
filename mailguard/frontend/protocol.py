"""The bytes side of an SMTP session, on aiosmtpd's protocol class: aiosmtpd gives the
transport, stream reader/writer, timer and (later) STARTTLS/AUTH machinery; the command
loop and DATA reading are ours so that replies, CRLF strictness and limits are exactly
qmail-smtpd's. Decisions are made by a Conversation."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from aiosmtpd.smtp import SMTP

from mailguard.body import Body, BodyWriter, spooler_for
from mailguard.context import Session
from mailguard.frontend import replies
from mailguard.frontend.conversation import Conversation, Data, Step, session_too_long
from mailguard.frontend.services import Services
from mailguard.frontend.wrapper import behind_wrapper, wrapped_tls
from mailguard.netaddr import plain_ip
from mailguard.verdict import Reply

log = logging.getLogger("mailguard.smtp")

COMMAND_LINE_LIMIT = 4096  # qmail has none; 4 KB is far above any legitimate command
LONG_LINE_LIMIT = 64 << 20  # with no databytes, a single line beyond 64 MB is refused
_HOP_PREFIXES = (b"received:", b"delivered-to:")
_NO_REPLY = Step(Reply(0, ""))  # a verb that has answered already (STARTTLS)


class _NoHooks:
    """aiosmtpd looks for handle_* hooks on its handler; ours live in Conversation."""


_NO_HOOKS = _NoHooks()


class Tracker:
    """Counts sessions (total and per IP) for the limits, and knows how to stop them."""

    def __init__(self) -> None:
        self.sessions: set[MailguardSMTP] = set()
        self.per_ip: dict[str, int] = {}
        self.shutting_down = False
        self.empty = asyncio.Event()
        self.empty.set()

    def add(self, proto: MailguardSMTP, ip: str) -> None:
        self.sessions.add(proto)
        self.empty.clear()
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1

    def remove(self, proto: MailguardSMTP, ip: str) -> None:
        if proto in self.sessions:
            self.sessions.discard(proto)
            left = self.per_ip.get(ip, 1) - 1
            if left:
                self.per_ip[ip] = left
            else:
                self.per_ip.pop(ip, None)
            if not self.sessions:
                self.empty.set()


class MailguardSMTP(SMTP):
    """One SMTP connection."""

    line_length_limit = 65536  # StreamReader buffer; longer DATA lines are read in pieces

    def __init__(
        self,
        services: Services,
        tracker: Tracker,
        *,
        env: dict[str, str] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        server = services.config.server
        # Total deadlines (monotonic, from services.clock) besides the idle timer, which
        # restarts with every line: set when the session / DATA starts (docs/drop-in.md)
        self._session_deadline: float | None = None
        self._data_deadline: float | None = None
        self._timer_for = "idle"  # what the armed timer stands for: idle | data | session
        self._init_transport_side(asyncio.get_running_loop(), server.hostname,
                                  float(server.timeout_s or 1200))
        self.services = services
        self.tracker = tracker
        self.dropin = env is not None  # handed over by `mailguard smtpd`
        self.env = env or {}
        self.on_close = on_close
        self.idle = False
        self.conversation: Conversation | None = None
        self._ip = ""

    def _init_transport_side(self, loop: asyncio.AbstractEventLoop, hostname: str,
                             timeout_s: float) -> None:
        """What aiosmtpd's `SMTP.__init__` sets up that its methods we keep use
        (connection_made/lost, eof_received, _reset_timeout, _cb_client_connected).

        Its own `__init__` is skipped on purpose: for its command loop, which ours
        replaces, it builds tables of the instance's smtp_*/auth_*/handle_* members
        with `inspect.getmembers` on every connection, about 5% of the daemon's time
        with a new connection per message. aiosmtpd is pinned (<1.5) because of this;
        every SMTP test exercises these attributes."""
        asyncio.StreamReaderProtocol.__init__(
            self, asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected, loop=loop)
        self.loop = loop
        self.event_handler = _NO_HOOKS
        self.hostname = hostname
        self.data_size_limit = None
        self.enable_SMTPUTF8 = True
        self._decode_data = False
        self.tls_context = None
        self.require_starttls = False
        self._timeout_duration = timeout_s
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._handle_hooks = {}
        self._smtp_methods = {}
        self._auth_methods = {}
        self._enforce_call_limit = False

    # --- aiosmtpd overrides ---------------------------------------------------------------

    def _timeout_cb(self) -> None:
        # qmail-smtpd: "451 timeout (#4.4.2)" and close; past the session's deadline 421.
        # An unfinished transaction is dropped: nothing of it is queued.
        if self.transport is not None and not self.transport.is_closing():
            conv = self.conversation
            if self._timer_for != "idle":
                log.info("event=session_timeout session=%s client=%s limit=%s",
                         conv.session.session_id if conv else "-", self._ip, self._timer_for)
            if self._timer_for == "session":
                step = conv.session_expired() if conv else Step(
                    session_too_long(self.hostname), close=True)
            else:
                step = conv.timeout() if conv else Step(replies.TIMEOUT)
            self._write(step.reply)
            self.transport.close()

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Arm the timer for the idle timeout, or for the DATA or session deadline when
        one of them comes first (it runs, like the idle timer, only while we wait for the
        client: checks and the hand-over are never cut short)."""
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        delay = duration or self._timeout_duration
        self._timer_for = "idle"
        now = self.services.clock.monotonic()
        for name, deadline in (("data", self._data_deadline),
                               ("session", self._session_deadline)):
            if deadline is not None and deadline - now <= delay:
                delay, self._timer_for = deadline - now, name
        self._timeout_handle = self.loop.call_later(max(0.0, delay), self._timeout_cb)

    async def _handle_client(self) -> None:
        conv = self._make_conversation()
        self.conversation = conv
        server = self.services.config.server
        self._session_deadline = self.services.clock.monotonic() + server.session_timeout_s
        try:
            self._pause_timeout()
            step = self._limit_step() or await conv.connect()
            self._reset_timeout()
            await self._send(step)
            while not step.close and self.transport is not None:
                if self.tracker.shutting_down:
                    await self._send(Step(replies.shutting_down(self.hostname), close=True))
                    break
                self.idle = True
                line = await self._read_command()
                self.idle = False
                self._pause_timeout()
                if line is None:
                    step = Step(replies.LINE_TOO_LONG)
                else:
                    step = await self._dispatch_safely(line)
                self._reset_timeout()
                await self._send(step)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            conv.closed()
            self.tracker.remove(self, self._ip)
            self.services.metrics.set("mailguard_connections_open", len(self.tracker.sessions))
            if self.transport is not None:
                self.transport.close()
            if self.on_close is not None:
                await self.on_close()

    def eof_received(self) -> bool | None:
        """A half-close (the client sent its whole pipelined session, then shut down its
        side): the reader gets EOF and the command loop ends there, after answering every
        command read before it, as qmail-smtpd does. aiosmtpd would cancel the session at
        once, dropping the replies, even the 250 of a message being queued."""
        return asyncio.StreamReaderProtocol.eof_received(self)

    def _pause_timeout(self) -> None:
        """The idle timer runs only while we wait for the client (reads, and writes it
        does not drain), as qmail-smtpd's timeoutread/timeoutwrite: time spent in checks,
        tarpit delays or the hand-over is not the client's, and a 451 then would make it
        retry mail that is being queued."""
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()

    # --- session set-up -----------------------------------------------------------------------

    def _make_conversation(self) -> Conversation:
        assert self.transport is not None
        peer = self.transport.get_extra_info("peername")
        sock = self.transport.get_extra_info("sockname")
        wrapped = self.dropin and behind_wrapper(peer)
        if not isinstance(peer, tuple):  # a unix socket handed over: a path, or ""
            peer = ("0.0.0.0", 0)
        if not isinstance(sock, tuple):
            sock = ("", 0)
        ip_text = self.env.get("TCPREMOTEIP") or str(peer[0])
        if wrapped and not self.env.get("TCPREMOTEIP"):  # stunnel names the client so
            ip_text = self.env.get("REMOTE_HOST") or ip_text
        try:
            ip = ipaddress.ip_address(ip_text)
        except ValueError:
            ip = ipaddress.ip_address("0.0.0.0")
        ip = plain_ip(ip)
        self._ip = str(ip)
        services = self.services
        session = Session(
            client_ip=ip,
            client_port=int(peer[1]) if len(peer) > 1 else 0,
            clock=services.clock,
            client_host=self.env.get("TCPREMOTEHOST", ""),
            local_ip=self.env.get("TCPLOCALIP") or str(sock[0]),
            local_port=int(sock[1]) if len(sock) > 1 else 0,
            env=self.env,
            session_id=secrets.token_hex(6),
        )
        if services.is_relay_client(ip):
            session.relay_client = True
        if "RELAYCLIENT" in self.env:  # qmail-smtpd: set (even empty) = may relay, and
            session.relay_client = True  # its value is appended to every recipient
            session.relay_suffix = self.env["RELAYCLIENT"]
        if self.transport.get_extra_info("sslcontext") is not None:
            session.tls = True  # an implicit-TLS (SMTPS) listener
        elif wrapped and wrapped_tls(self.env):
            session.tls = True  # sslserver / stunnel ran the handshake (docs/drop-in.md)
        self.tracker.add(self, self._ip)
        services.metrics.inc("mailguard_connections_total")
        services.metrics.set("mailguard_connections_open", len(self.tracker.sessions))
        extended = services.config.server.extensions
        if extended is None:  # unset: qmail-smtpd's exact dialogue for the drop-in only
            extended = not self.dropin
        return Conversation(services, session, extended=extended)

    def _limit_step(self) -> Step | None:
        server = self.services.config.server
        host = server.hostname
        if len(self.tracker.sessions) > server.max_connections:
            self.services.metrics.inc("mailguard_connections_refused_total", reason="total")
            return Step(replies.too_many_connections(host), close=True)
        if self.tracker.per_ip.get(self._ip, 0) > server.max_connections_per_ip:
            self.services.metrics.inc("mailguard_connections_refused_total", reason="per_ip")
            return Step(replies.too_many_from_ip(host), close=True)
        return None

    # --- I/O ------------------------------------------------------------------------------

    def _write(self, reply: Reply) -> None:
        data = "".join(f"{line}\r\n" for line in reply.lines())
        self._writer.write(data.encode("utf-8", "surrogateescape"))

    async def _send(self, step: Step) -> None:
        if self.transport is None or self.transport.is_closing() or step is _NO_REPLY:
            return
        self._write(step.reply)
        await self._writer.drain()
        if step.close:
            self.transport.close()

    async def _start_tls(self, ctx: ssl.SSLContext) -> None:
        """RFC 3207: "220 ready to start TLS", then the handshake on this connection.
        Whatever the client sent after STARTTLS came in clear text and is dropped
        (CVE-2011-0411: injected commands must not run inside the TLS session)."""
        assert isinstance(self.transport, asyncio.Transport)
        self.transport.pause_reading()  # asyncio's start_tls would pause it after our drain
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        self._write(replies.TLS_READY)
        timeout = self.services.config.tls.handshake_timeout_s
        try:
            await self._writer.start_tls(ctx, ssl_handshake_timeout=timeout)
        except OSError as exc:  # ssl.SSLError, reset, handshake timeout
            session = self.conversation.session if self.conversation else None
            log.info("event=tls_failed session=%s client=%s error=%r",
                     session.session_id if session else "-", self._ip,
                     str(exc) or type(exc).__name__)
            raise ConnectionError("TLS handshake failed") from exc
        self.transport = self._writer.transport
        # Python 3.11's StreamWriter.start_tls leaves the reader's flow control on the
        # plain transport; pausing must go through the TLS one (as aiosmtpd does).
        self._reader._transport = self.transport  # type: ignore[attr-defined]
        self._reset_timeout()

    async def shutdown_idle(self) -> None:
        """Graceful stop: a session waiting for a command gets 421 now."""
        if self.idle and self.transport is not None and not self.transport.is_closing():
            await self._send(Step(replies.shutting_down(self.hostname), close=True))

    def abort(self) -> None:
        """The shutdown deadline passed: 421 and close, whatever the session was doing."""
        if self.transport is not None and not self.transport.is_closing():
            self._write(replies.shutting_down(self.hostname))
            self.transport.close()

    async def _read_command(self) -> bytes | None:
        """One command line (LF-terminated, CR optional as in qmail), or None when the line
        exceeded COMMAND_LINE_LIMIT (the rest of it is read and dropped)."""
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            await self._reader.read(exc.consumed)
            await self._discard_line()
            return None
        if len(line) > COMMAND_LINE_LIMIT:
            return None
        return line

    async def _discard_line(self) -> None:
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                await self._reader.read(exc.consumed)

    async def _dispatch_safely(self, raw: bytes) -> Step:
        """A command whose handling fails unexpectedly (a bug, not the network) gets 451
        and the session ends, with the traceback logged, rather than a silent hang-up."""
        try:
            return await self._dispatch(raw)
        except (ConnectionError, asyncio.IncompleteReadError):
            raise
        except Exception:
            session = self.conversation.session if self.conversation else None
            log.exception("event=command_error session=%s client=%s",
                          session.session_id if session else "-", self._ip)
            return Step(replies.LOCAL_ERROR, close=True)

    async def _dispatch(self, raw: bytes) -> Step:
        conv = self.conversation
        assert conv is not None
        line = raw.rstrip(b"\n")
        if line.endswith(b"\r"):
            line = line[:-1]
        if b"\0" in line:
            return Step(replies.SYNTAX)
        text = line.decode("utf-8", "surrogateescape")
        verb, _, arg = text.partition(" ")
        handler = self._verbs.get(verb.upper())
        if handler is None:
            return Step(replies.UNIMPLEMENTED)
        return await handler(self, conv, arg)

    # --- verbs ----------------------------------------------------------------------------

    async def _helo(self, conv: Conversation, arg: str) -> Step:
        return await conv.helo(arg, esmtp=False)

    async def _ehlo(self, conv: Conversation, arg: str) -> Step:
        return await conv.helo(arg, esmtp=True)

    async def _mail(self, conv: Conversation, arg: str) -> Step:
        return await conv.mail(arg)

    async def _rcpt(self, conv: Conversation, arg: str) -> Step:
        return await conv.rcpt(arg)

    async def _rset(self, conv: Conversation, arg: str) -> Step:
        return conv.rset()

    async def _noop(self, conv: Conversation, arg: str) -> Step:
        return Step(replies.OK)

    async def _vrfy(self, conv: Conversation, arg: str) -> Step:
        return Step(replies.VRFY)

    async def _help(self, conv: Conversation, arg: str) -> Step:
        return Step(Reply(214, self.services.texts.help))  # the replaced qmail's own words

    async def _quit(self, conv: Conversation, arg: str) -> Step:
        return conv.quit()

    async def _data(self, conv: Conversation, arg: str) -> Step:
        early = conv.data_start()
        if early is not None:
            return early
        clock = self.services.clock
        self._data_deadline = clock.monotonic() + self.services.config.server.data_timeout_s
        self._reset_timeout()
        await self._send(Step(replies.GO_AHEAD))
        try:
            data = await self._read_data()
        finally:
            self._data_deadline = None
        self._pause_timeout()
        if data is None:
            conv.closed()
            return Step(Reply(451, self.services.texts.bare_lf), close=True)
        return await conv.data_end(data)

    async def _starttls(self, conv: Conversation, arg: str) -> Step:
        ctx = self.services.tls
        if ctx is None or not conv.extended:
            return Step(replies.UNIMPLEMENTED)  # qmail's answer: no certificate configured
        if conv.session.tls:
            return Step(replies.TLS_ACTIVE)
        if arg.strip():
            return Step(replies.TLS_SYNTAX)
        await self._start_tls(ctx)
        conv.tls_started()
        return _NO_REPLY  # the 220 went before the handshake

    async def _auth(self, conv: Conversation, arg: str) -> Step:
        if self.services.auth is None or not conv.extended:
            return Step(replies.UNIMPLEMENTED)
        return await self.services.auth.command(conv.session, arg, self._ask)

    _verbs: ClassVar[dict[str, Callable[[Any, Conversation, str], Awaitable[Step]]]] = {
        "HELO": _helo,
        "EHLO": _ehlo,
        "MAIL": _mail,
        "RCPT": _rcpt,
        "RSET": _rset,
        "NOOP": _noop,
        "VRFY": _vrfy,
        "HELP": _help,
        "QUIT": _quit,
        "DATA": _data,
        "STARTTLS": _starttls,
        "AUTH": _auth,
    }

    async def _ask(self, challenge: str) -> str | None:
        """One AUTH round trip: "334 <challenge>", then the client's line (None when too
        long)."""
        self._reset_timeout()
        self._writer.write(f"334 {challenge}\r\n".encode("ascii"))
        await self._writer.drain()
        line = await self._read_command()
        self._pause_timeout()
        if line is None:
            return None
        return line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")

    async def _read_data(self) -> Data | None:
        """Read the message up to the lone dot. Returns None on a bare LF (qmail answers
        451 and closes: it is how SMTP smuggling starts). Dot-stuffing is undone and CRLF
        becomes LF (qmail's stored form); over databytes the rest is read and dropped.
        Past `[server] spool_threshold_bytes` the message goes to a spool file as it
        comes (mailguard/body.py); should the disk fail, the rest is read and dropped
        too, and the caller answers 451. On any other way out the file is released."""
        writer = spooler_for(self.services.config).writer()
        try:
            return await self._receive(writer)
        except BaseException:
            writer.discard()
            raise

    async def _receive(self, writer: BodyWriter) -> Data | None:
        server = self.services.config.server
        limit = server.databytes or server.max_message_bytes
        out = bytearray()
        flush_at = writer.flush_at()
        size = 0
        too_big = False
        in_headers = True
        hops = 0
        reader = self._reader
        # Re-arming the idle timer costs a timer handle; per line it was the DATA loop's
        # biggest cost. Re-arm at most every tenth of the timeout (and every second).
        clock = self.loop.time
        rearm_s = min(1.0, self._timeout_duration / 10)
        rearm_at = 0.0
        while True:
            try:
                line = await reader.readuntil(b"\n")
                length = len(line)
            except asyncio.LimitOverrunError as exc:
                keep = 0 if too_big else (limit - size if limit else LONG_LINE_LIMIT)
                line, length = await self._read_long_line(exc.consumed, keep)
                too_big = too_big or length > len(line)
            if (now := clock()) >= rearm_at:
                self._reset_timeout()
                rearm_at = now + rearm_s
            if len(line) < 2 or line[-2] != 0x0D:
                writer.discard()
                return None
            if line == b".\r\n":
                break
            if line[0] == 0x2E:
                line = line[1:]
                length -= 1
            size += length - 1  # stored with LF, as qmail counts databytes
            if too_big or (limit and size > limit):
                if not too_big:
                    writer.discard()
                too_big = True
                out.clear()
                continue
            if in_headers:
                if line == b"\r\n":
                    in_headers = False
                elif line[:13].lower().startswith(_HOP_PREFIXES):
                    hops += 1
            out += line[:-2]
            out += b"\n"
            if len(out) >= flush_at:  # (after a disk failure flush keeps nothing)
                await writer.flush(out)
                flush_at = writer.flush_at()
        if too_big:  # (a long line may have set it without the discard above)
            writer.discard()
            return Data(Body(), size, too_big, hops)
        try:
            body = await writer.finish(out)
        except OSError:
            body = Body()
        if writer.error is not None:
            log.error("event=spool_failed error=%r", str(writer.error))
            return Data(Body(), size, too_big, hops, spool_failed=True)
        return Data(body, size, too_big, hops)

    async def _read_long_line(self, first: int, keep: int) -> tuple[bytes, int]:
        """A line longer than the reader's buffer, read in pieces. At most `keep` bytes
        are kept (plus the line's last two, to check its CRLF); returns (kept, length)."""
        kept = bytearray()
        length = 0
        tail = b""
        piece = await self._reader.read(first)
        while True:
            length += len(piece)
            if len(kept) < keep:
                kept += piece[: keep - len(kept)]
            tail = (tail + piece)[-2:]
            if piece.endswith(b"\n"):
                break
            try:
                piece = await self._reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as exc:
                piece = await self._reader.read(exc.consumed)
        if length > len(kept):
            return bytes(kept[: max(0, len(kept) - 2)]) + tail, length
        return bytes(kept), length
