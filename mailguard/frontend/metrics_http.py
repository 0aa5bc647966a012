"""A minimal HTTP endpoint for Prometheus: `GET /metrics` → the daemon's counters. Anything
else gets 404; requests are small and answered at once (no keep-alive)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailguard.metrics import Metrics
from mailguard.settings.base import parse_hostport

log = logging.getLogger("mailguard.metrics")


class MetricsServer:
    def __init__(self, metrics: Metrics, listen: str) -> None:
        self._metrics = metrics
        self._listen = listen
        self._server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        host, port = parse_hostport(self._listen, 9125)
        self._server = await asyncio.start_server(self._handle, host, port)
        addr = self._server.sockets[0].getsockname()
        log.info("event=metrics_listening address=%s:%d", addr[0], addr[1])
        return str(addr[0]), int(addr[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
                body = self._metrics.render().encode()
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
