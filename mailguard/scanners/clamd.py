"""An asyncio clamd client (zINSTREAM), built once and shared.

Protocol (clamd(8)): send `zINSTREAM\\0`, then chunks `<4-byte big-endian length><bytes>`,
then a zero-length chunk; the NUL-terminated reply is `stream: OK`, `stream: <name>
FOUND` or `<text> ERROR`. Anything else is a failed scan — never "clean". The size is
compared with StreamMaxLength *before* sending: over the limit clamd drops the
connection mid-stream and the reply is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from mailguard.body import Body, Message, as_body
from mailguard.errors import TemporaryError
from mailguard.scanners.net import close_stream, open_stream, with_failover

DEFAULT_PORT = 3310
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Clean:
    """clamd found nothing."""

    server: str = field(default="", compare=False)  # the clamd that answered


@dataclass(frozen=True, slots=True)
class Infected:
    name: str  # the signature name, e.g. "Eicar-Test-Signature"
    server: str = field(default="", compare=False)  # the clamd that answered


@dataclass(frozen=True, slots=True)
class TooLarge:
    """Not sent: bigger than clamd's StreamMaxLength."""

    size: int
    limit: int


ClamdResult = Clean | Infected | TooLarge


def parse_reply(raw: bytes) -> Clean | Infected:
    """Interpret clamd's reply to zINSTREAM; TemporaryError for anything unexpected."""
    text = raw.rstrip(b"\0").decode("utf-8", "replace").strip()
    if text == "stream: OK":
        return Clean()
    if text.startswith("stream: ") and text.endswith(" FOUND"):
        name = text[len("stream: ") : -len(" FOUND")].strip()
        if name:
            return Infected(name)
    if text.endswith("ERROR"):
        raise TemporaryError(f"clamd error: {text[:200]}")
    raise TemporaryError(f"unexpected clamd reply: {text[:200]!r}")


class ClamdClient:
    """zINSTREAM over a unix socket or TCP; `servers` are tried in order (failover)."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        connect_timeout_s: float = 5.0,
        scan_timeout_s: float = 60.0,
        max_size_bytes: int = 25 * 1024 * 1024,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        if not servers:
            raise ValueError("clamd: no servers")
        self.servers = tuple(servers)
        self.connect_timeout_s = connect_timeout_s
        self.scan_timeout_s = scan_timeout_s
        self.max_size_bytes = max_size_bytes
        self._chunk = chunk_bytes

    async def scan(self, data: Message) -> ClamdResult:
        """Clean, Infected(name) or TooLarge; TemporaryError when no server could scan.
        A spooled message is streamed from its file, a piece at a time."""
        body = as_body(data)
        if body.size > self.max_size_bytes:
            return TooLarge(body.size, self.max_size_bytes)
        return await with_failover("clamd", self.servers, lambda s: self._scan_on(s, body))

    async def ping(self) -> None:
        """TemporaryError unless a server answers PONG (health checks, start-up)."""
        reply = await with_failover("clamd", self.servers, lambda s: self._command(s, "PING"))
        if reply != "PONG":
            raise TemporaryError(f"clamd: unexpected reply to PING: {reply[:100]!r}")

    async def version(self) -> str:
        return await with_failover("clamd", self.servers, lambda s: self._command(s, "VERSION"))

    async def _scan_on(self, server: str, body: Body) -> Clean | Infected:
        reader, writer = await open_stream(server, DEFAULT_PORT, self.connect_timeout_s)
        try:
            async with asyncio.timeout(self.scan_timeout_s):
                writer.write(b"zINSTREAM\0")
                async with contextlib.aclosing(body.stream()) as parts:
                    async for part in parts:
                        view = memoryview(part)
                        for start in range(0, len(view), self._chunk):
                            piece = view[start : start + self._chunk]
                            writer.write(struct.pack(">I", len(piece)))
                            writer.write(piece)
                            await writer.drain()
                writer.write(struct.pack(">I", 0))
                await writer.drain()
                raw = await _read_reply(reader)
        except TimeoutError:
            raise TemporaryError(
                f"{server}: no answer within {self.scan_timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise TemporaryError(f"{server}: connection failed: {exc}") from None
        finally:
            await close_stream(writer)
        try:
            return replace(parse_reply(raw), server=server)
        except TemporaryError as exc:
            raise TemporaryError(f"{server}: {exc}") from None

    async def _command(self, server: str, command: str) -> str:
        reader, writer = await open_stream(server, DEFAULT_PORT, self.connect_timeout_s)
        try:
            async with asyncio.timeout(self.scan_timeout_s):
                writer.write(f"z{command}\0".encode("ascii"))
                await writer.drain()
                raw = await _read_reply(reader)
        except TimeoutError:
            raise TemporaryError(f"{server}: no answer to {command}") from None
        except OSError as exc:
            raise TemporaryError(f"{server}: connection failed: {exc}") from None
        finally:
            await close_stream(writer)
        return raw.rstrip(b"\0").decode("utf-8", "replace").strip()


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    """Up to the NUL; a connection closed before it (or a huge reply) is an error."""
    try:
        return await reader.readuntil(b"\0")
    except asyncio.IncompleteReadError as exc:
        got = exc.partial.decode("utf-8", "replace")[:200]
        raise TemporaryError(f"connection closed before the reply ended: {got!r}") from None
    except asyncio.LimitOverrunError:
        raise TemporaryError("reply too long") from None
