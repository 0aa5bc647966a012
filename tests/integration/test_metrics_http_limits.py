"""The Prometheus endpoint against an oversized request line: closed quietly, no
unhandled exception in the daemon's log."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from mailguard.frontend.metrics_http import MetricsServer
from mailguard.metrics import Metrics


def ask(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


async def test_an_oversized_request_line_is_closed_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = MetricsServer(Metrics(), "127.0.0.1:0")
    _, port = await server.start()
    try:
        with caplog.at_level(logging.WARNING):
            long_line = b"GET /" + b"x" * 100_000 + b" HTTP/1.1\r\n\r\n"
            assert await asyncio.to_thread(ask, port, long_line) == b""
            ok = await asyncio.to_thread(ask, port, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        await server.stop()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
