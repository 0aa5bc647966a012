"""A minimal HTTP endpoint for Prometheus: `GET /metrics` → the daemon's metrics, as
prometheus-client writes them (`generate_latest` of the Metrics' own registry, summed over
the worker processes in multi-process mode). Anything else gets 404; requests are small
and answered at once (no keep-alive)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from mailguard.clock import Clock
from mailguard.errors import MailguardError
from mailguard.metrics import CONTENT_TYPE, Metrics
from mailguard.settings.base import parse_hostport

if TYPE_CHECKING:
    from mailguard.store.database import Database

log = logging.getLogger("mailguard.metrics")

Refresh = Callable[[], Awaitable[None]]
STORE_GAUGES_S = 60.0  # the store's sizes are counted at most once a minute


class StoreGauges:
    """Sizes kept in the store, as gauges: counted when /metrics is asked for, at most
    once per `interval_s` (a count can scan a big table). A store that cannot be read
    leaves the last values (logged), never a failed scrape."""

    def __init__(self, db: Database, metrics: Metrics, clock: Clock, *,
                 whitelist_after: int, interval_s: float = STORE_GAUGES_S) -> None:
        self._db = db
        self._metrics = metrics
        self._clock = clock
        self._whitelist_after = whitelist_after
        self._interval_s = interval_s
        self._last: float | None = None
        metrics.declare("mailguard_greylist_triplets", "gauge",
                        "greylist triplets in the store, by state (passed, pending)")
        metrics.declare("mailguard_greylist_clients", "gauge",
                        "greylisted clients in the store (whitelisted: auto-whitelisted)")
        metrics.declare("mailguard_quarantine_held", "gauge", "messages held in quarantine")

    async def refresh(self) -> None:
        from mailguard.store.greylist import GreylistStore  # noqa: PLC0415
        from mailguard.store.quarantine import QuarantineStore, Scope  # noqa: PLC0415

        now = self._clock.monotonic()
        if self._last is not None and now - self._last < self._interval_s:
            return
        self._last = now
        try:
            async with asyncio.timeout(5):
                g = await GreylistStore(self._db).stats(self._whitelist_after)
                held = await QuarantineStore(self._db).count(Scope())
        except (MailguardError, TimeoutError) as exc:
            log.warning("event=metrics_store_gauges_failed error=%r", str(exc))
            return
        m = self._metrics
        m.set("mailguard_greylist_triplets", g.passed, state="passed")
        m.set("mailguard_greylist_triplets", g.pending, state="pending")
        m.set("mailguard_greylist_clients", g.clients, kind="all")
        m.set("mailguard_greylist_clients", g.whitelisted, kind="whitelisted")
        m.set("mailguard_quarantine_held", held)


class MetricsServer:
    def __init__(self, metrics: Metrics, listen: str, *, refresh: Refresh | None = None) -> None:
        self._metrics = metrics
        self._listen = listen
        self._refresh = refresh  # run before each exposition (e.g. StoreGauges.refresh)
        self._servers: list[asyncio.Server] = []

    async def start(self, inherited: Sequence[socket.socket] = ()) -> tuple[str, int]:
        """Bind `listen` (logged), or serve the `inherited` sockets a worker's supervisor
        bound and logged: the worker that accepts answers with the sum over workers."""
        if inherited:
            servers = [await asyncio.start_server(self._handle, sock=s) for s in inherited]
            self._servers += servers
            addr = inherited[0].getsockname()
            return str(addr[0]), int(addr[1])
        host, port = parse_hostport(self._listen, 9125)
        server = await asyncio.start_server(self._handle, host, port)
        self._servers.append(server)
        addr = server.sockets[0].getsockname()
        log.info("event=metrics_listening address=%s:%d", addr[0], addr[1])
        return str(addr[0]), int(addr[1])

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                status, ctype = "200 OK", CONTENT_TYPE
                if self._refresh is not None:
                    await self._refresh()
                # in multi-process mode this reads every worker's files: off the loop
                body = await asyncio.to_thread(self._metrics.exposition)
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):  # ValueError: line over 64 KB
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
