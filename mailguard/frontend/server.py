"""Listeners, connection limits and graceful shutdown for the SMTP daemon."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl

from mailguard.frontend.listeners import BACKLOG, Listeners, SharedListener
from mailguard.frontend.live import LiveServices
from mailguard.frontend.protocol import MailguardSMTP, Tracker
from mailguard.frontend.services import Services
from mailguard.settings.base import parse_hostport

log = logging.getLogger("mailguard.server")


class SmtpServer:
    """All SMTP listeners of one daemon process."""

    def __init__(self, services: Services | LiveServices) -> None:
        # Each connection takes the current Services (reloaded when a control file changed)
        self.live = services if isinstance(services, LiveServices) else LiveServices(services)
        self.tracker = Tracker()
        self._servers: list[asyncio.Server] = []
        self._shared: list[SharedListener] = []  # a worker's sockets (frontend/listeners.py)

    async def start(self, inherited: Listeners | None = None) -> list[tuple[str, int]]:
        """Bind every `listen` address; returns the bound (host, port) pairs (port 0 is
        resolved to the real port). `inherited`: a worker serves the sockets its
        supervisor bound (and logged) instead."""
        loop = asyncio.get_running_loop()
        bound: list[tuple[str, int]] = []
        services = self.live.services
        tls = services.config.tls
        if inherited is not None:
            shared: list[tuple[socket.socket, ssl.SSLContext | None]]
            shared = [(s, None) for s in inherited.smtp]
            shared += [(s, services.tls) for s in inherited.smtps]
            for sock, ctx in shared:
                listener = SharedListener(
                    sock, lambda: MailguardSMTP(self.live.current(), self.tracker),
                    ssl_context=ctx, handshake_timeout_s=tls.handshake_timeout_s)
                listener.start()
                self._shared.append(listener)
                addr = sock.getsockname()
                bound.append((str(addr[0]), int(addr[1])))
            return bound
        # (address, TLS context): the plain listeners, then the implicit-TLS (SMTPS) ones
        listeners: list[tuple[str, ssl.SSLContext | None]] = [
            (item, None) for item in services.config.server.listen
        ]
        listeners += [(item, services.tls) for item in tls.smtps_listen]
        for item, ctx in listeners:
            host, port = parse_hostport(item, 465 if ctx else 25)
            server = await loop.create_server(
                lambda: MailguardSMTP(self.live.current(), self.tracker),
                host,
                port,
                reuse_address=True,
                backlog=BACKLOG,
                ssl=ctx,
                ssl_handshake_timeout=tls.handshake_timeout_s if ctx else None,
            )
            self._servers.append(server)
            for sock in server.sockets:
                addr = sock.getsockname()
                bound.append((str(addr[0]), int(addr[1])))
                mode = " tls=implicit" if ctx else ""
                if sock.family == socket.AF_INET6:
                    log.info("event=listening address=[%s]:%d%s", addr[0], addr[1], mode)
                else:
                    log.info("event=listening address=%s:%d%s", addr[0], addr[1], mode)
        return bound

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting; sessions waiting for a command get 421 at once; transactions
        in flight may finish for `grace_s` seconds; whatever is left then gets 421.
        Hand-overs already started always complete (nothing that got a 250 is lost)."""
        self.tracker.shutting_down = True
        for server in self._servers:
            server.close()
        for listener in self._shared:
            listener.close()
        sessions = list(self.tracker.sessions)
        log.info("event=shutdown sessions=%d grace_s=%g", len(sessions), grace_s)
        for proto in sessions:
            await proto.shutdown_idle()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.tracker.empty.wait(), grace_s)
        for proto in list(self.tracker.sessions):
            proto.abort()
        await self.live.services.drain()
        for server in self._servers:
            await server.wait_closed()
        for listener in self._shared:
            await listener.wait_closed()
