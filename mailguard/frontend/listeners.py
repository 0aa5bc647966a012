"""Listening sockets bound once by the supervisor and shared by its worker processes
(`[server] workers` > 1, docs/workers.md).

The supervisor binds every listener before it forks: a port in use is reported once, a
port 0 is resolved once (every worker serves the same port), and a worker restarted later
inherits the very same sockets. Each worker accepts on all of them; the kernel gives each
new connection to one of the workers waiting in accept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from mailguard.settings.base import parse_hostport

log = logging.getLogger("mailguard.server")

BACKLOG = 512  # the kernel's queue of connections not yet accepted, per listener


@dataclass
class Listeners:
    """Bound, listening, non-blocking sockets: SMTP, SMTPS (implicit TLS), the metrics
    endpoint and the control socket (None when off or when it could not be set up)."""

    smtp: list[socket.socket] = field(default_factory=list)
    smtps: list[socket.socket] = field(default_factory=list)
    metrics: list[socket.socket] = field(default_factory=list)
    control: socket.socket | None = None

    def all(self) -> list[socket.socket]:
        return [*self.smtp, *self.smtps, *self.metrics,
                *([self.control] if self.control is not None else [])]

    def close(self) -> None:
        """Close this process's copies (the workers keep theirs open until they drain)."""
        for sock in self.all():
            sock.close()


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker process gets from its supervisor (app.run_daemon's `worker`)."""

    index: int  # 0 … workers-1; a restarted worker keeps the index of the one it replaces
    listeners: Listeners
    metrics_dir: str | None  # prometheus-client multi-process directory, None = no /metrics
    ready: Callable[[], None]  # tells the supervisor this worker serves


class SharedListener:
    """Accepts on a socket shared with other worker processes, one connection per
    wake-up: asyncio's own server takes every connection queued at once, so the worker
    that woke first would take a whole burst. Here the workers take turns, and a busy one
    (slower back to `accept`) gets fewer."""

    def __init__(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol], *,
                 ssl_context: ssl.SSLContext | None = None,
                 handshake_timeout_s: float | None = None) -> None:
        self.sock = sock
        self._factory = factory
        self._ssl = ssl_context
        self._handshake_timeout_s = handshake_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._accept_loop())

    def close(self) -> None:
        """Stop accepting and close this process's copy of the socket."""
        if self._task is not None:
            self._task.cancel()
        for task in self._handshakes:
            task.cancel()
        self.sock.close()

    async def wait_closed(self) -> None:
        for task in [*([self._task] if self._task else []), *self._handshakes]:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:  # EMFILE and the like: log, breathe, go on
                log.error("event=accept_failed error=%r", str(exc))
                await asyncio.sleep(0.1)
                continue
            if self._ssl is None:
                await self._connect(conn)
            else:  # the TLS handshake must not hold up the next accept
                task = asyncio.create_task(self._connect(conn))
                self._handshakes.add(task)
                task.add_done_callback(self._handshakes.discard)

    async def _connect(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                self._factory, conn, ssl=self._ssl,
                ssl_handshake_timeout=self._handshake_timeout_s if self._ssl else None)
        except OSError as exc:  # a TLS handshake that failed or timed out, a reset
            log.debug("event=connection_setup_failed error=%r", str(exc))
            conn.close()


def bind_tcp(address: str, default_port: int) -> list[socket.socket]:
    """Listening sockets for `HOST:PORT`, one per address the host resolves to (as
    asyncio's `create_server` binds them: SO_REUSEADDR, IPv6 sockets v6-only)."""
    host, port = parse_hostport(address, default_port)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address "
                              f"{addr!r}: {(exc.strerror or '').lower()}") from None
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def describe(sock: socket.socket) -> str:
    """`host:port`, `[v6]:port`: the form of the `event=listening` lines."""
    addr = sock.getsockname()
    if sock.family == socket.AF_INET6:
        return f"[{addr[0]}]:{addr[1]}"
    return f"{addr[0]}:{addr[1]}"


def bind_smtp(listen: tuple[str, ...], smtps_listen: tuple[str, ...]) -> Listeners:
    """The SMTP and SMTPS listeners, each logged as the single daemon logs it."""
    out = Listeners()
    try:
        for item in listen:
            out.smtp += bind_tcp(item, 25)
        for item in smtps_listen:
            out.smtps += bind_tcp(item, 465)
    except BaseException:
        out.close()
        raise
    for sock in out.smtp:
        log.info("event=listening address=%s", describe(sock))
    for sock in out.smtps:
        log.info("event=listening address=%s tls=implicit", describe(sock))
    return out
