"""Connecting to a scanner: `unix:/path` or `HOST:PORT`, with a connect timeout, and a
list of servers tried in order (failover) — shared by the clamd and spamd clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from mailguard.errors import PermanentError, TemporaryError
from mailguard.settings.base import parse_hostport

log = logging.getLogger("mailguard.scanners")
T = TypeVar("T")
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_stream(server: str, default_port: int, timeout_s: float) -> Streams:
    """Connect to `server`; any failure (refused, missing socket, timeout) is a
    TemporaryError naming the server."""
    try:
        async with asyncio.timeout(timeout_s):
            if server.startswith("unix:"):
                return await asyncio.open_unix_connection(server[5:])
            host, port = parse_hostport(server, default_port)
            return await asyncio.open_connection(host, port)
    except TimeoutError:
        raise TemporaryError(f"{server}: connect timed out after {timeout_s:g}s") from None
    except (OSError, ValueError) as exc:
        raise TemporaryError(f"{server}: cannot connect: {_reason(exc)}") from None


async def close_stream(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def with_failover(
    name: str, servers: Sequence[str], attempt: Callable[[str], Awaitable[T]]
) -> T:
    """Run `attempt(server)` on each server in order until one succeeds. A TemporaryError
    moves on to the next server; when all failed, one TemporaryError lists every reason.
    A PermanentError (the server understood and refused) is not retried elsewhere."""
    reasons: list[str] = []
    for server in servers:
        try:
            return await attempt(server)
        except TemporaryError as exc:
            reasons.append(str(exc))
            if len(reasons) < len(servers):
                log.warning("event=scanner_failover scanner=%s error=%r", name, str(exc))
        except PermanentError:
            raise
    raise TemporaryError(f"{name}: " + "; ".join(reasons or ["no servers configured"]))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
