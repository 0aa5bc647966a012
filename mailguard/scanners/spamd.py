"""An asyncio spamd client (SPAMC/1.5), built once and shared.

One request per connection: `SYMBOLS` (rule names) or `REPORT` (the text report, for
X-Spam-Report), with `User: <recipient>` so spamd applies that user's SQL preferences.
The answer is `SPAMD/1.1 0 EX_OK` + `Spam: True ; 15.3 / 5.0` + the body; a non-zero
code is a sysexits value (spamd/spamd.raw), turned into Temporary/PermanentError.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from mailguard.errors import PermanentError, TemporaryError
from mailguard.scanners.net import close_stream, open_stream, with_failover

DEFAULT_PORT = 783
MAX_RESPONSE_BYTES = 1024 * 1024  # a report is a few KB; anything huge is garbage
# sysexits(3) codes spamd answers with; the request itself was wrong in these, so
# retrying elsewhere cannot help. Everything else (69 unavailable, 74 I/O error,
# 75 tempfail...) is temporary.
PERMANENT_CODES = {64: "EX_USAGE", 65: "EX_DATAERR", 76: "EX_PROTOCOL"}
_STATUS = re.compile(r"^SPAMD/(\d+)\.(\d+)\s+(\d+)\s*(.*)$")
_SPAM = re.compile(r"^(True|False|Yes|No)\s*;\s*(-?[\d.]+)\s*/\s*(-?[\d.]+)\s*$", re.I)
_REPORT_RULE = re.compile(r"^\s*-?[\d.]+\s+([A-Z0-9_]+)\s", re.M)


@dataclass(frozen=True, slots=True)
class SpamResult:
    spam: bool
    score: float
    threshold: float  # the user's required_score
    symbols: tuple[str, ...] = ()  # rule names that hit
    report: str = ""  # spamd's report (REPORT requests only)
    server: str = field(default="", compare=False)  # the spamd that answered


def parse_response(raw: bytes, *, report: bool) -> SpamResult:
    """Interpret spamd's answer; raises TemporaryError/PermanentError for failures."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    status = _STATUS.match(lines[0]) if lines else None
    if status is None:
        raise TemporaryError(f"unexpected spamd reply: {raw[:100]!r}")
    code, text = int(status.group(3)), status.group(4).strip()
    if code != 0:
        if code in PERMANENT_CODES:
            raise PermanentError(f"spamd refused the request: {code} {text[:200]}")
        raise TemporaryError(f"spamd failed: {code} {text[:200]}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    spam = _SPAM.match(headers.get("spam", ""))
    if spam is None or not sep:
        raise TemporaryError(f"spamd answer without a valid Spam: header: {raw[:200]!r}")
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) != len(body)):
        raise TemporaryError(f"spamd answer truncated ({len(body)} of {length} bytes)")
    text_body = body.decode("utf-8", "replace")
    if report:
        symbols = tuple(_REPORT_RULE.findall(text_body.partition("---- ")[2]))
    else:
        symbols = tuple(s for s in text_body.strip().split(",") if s)
    return SpamResult(
        spam=spam.group(1).lower() in ("true", "yes"),
        score=float(spam.group(2)),
        threshold=float(spam.group(3)),
        symbols=symbols,
        report=text_body.strip() if report else "",
    )


class SpamdClient:
    """SPAMC/1.5 over TCP or a unix socket; `servers` are tried in order (failover)."""

    def __init__(self, servers: Sequence[str], *, timeout_s: float = 30.0) -> None:
        if not servers:
            raise ValueError("spamd: no servers")
        self.servers = tuple(servers)
        self.timeout_s = timeout_s

    async def check(self, message: bytes, user: str = "", *, report: bool = False) -> SpamResult:
        """Scan `message` with `user`'s preferences (empty: spamd's default user)."""
        if any(c in user for c in "\r\n\0"):
            raise PermanentError("spamd: invalid user name")
        command = "REPORT" if report else "SYMBOLS"
        head = f"{command} SPAMC/1.5\r\nContent-length: {len(message)}\r\n"
        if user:
            head += f"User: {user}\r\n"
        # surrogateescape: an address with non-UTF-8 bytes goes out as the bytes it was
        request = head.encode("utf-8", "surrogateescape") + b"\r\n" + message
        return await with_failover(
            "spamd", self.servers, lambda s: self._check_on(s, request, report))

    async def _check_on(self, server: str, request: bytes, report: bool) -> SpamResult:
        """One server's answer, parsed here so that a temporary failure code or a broken
        answer moves on to the next server (a permanent code does not)."""
        raw = await self._request(server, request)
        try:
            return replace(parse_response(raw, report=report), server=server)
        except TemporaryError as exc:
            raise TemporaryError(f"{server}: {exc}") from None

    async def ping(self) -> None:
        raw = await with_failover(
            "spamd", self.servers, lambda s: self._request(s, b"PING SPAMC/1.5\r\n\r\n")
        )
        if not raw.startswith(b"SPAMD/") or b"PONG" not in raw.split(b"\r\n", 1)[0]:
            raise TemporaryError(f"spamd: unexpected reply to PING: {raw[:100]!r}")

    async def _request(self, server: str, request: bytes) -> bytes:
        reader, writer = await open_stream(server, DEFAULT_PORT, self.timeout_s)
        try:
            async with asyncio.timeout(self.timeout_s):
                writer.write(request)
                await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
                raw = await reader.read(MAX_RESPONSE_BYTES + 1)
                chunks = [raw]
                while raw:
                    raw = await reader.read(MAX_RESPONSE_BYTES + 1)
                    chunks.append(raw)
                    if sum(map(len, chunks)) > MAX_RESPONSE_BYTES:
                        raise TemporaryError(f"{server}: answer too long")
        except TimeoutError:
            raise TemporaryError(f"{server}: no answer within {self.timeout_s:g}s") from None
        except OSError as exc:
            raise TemporaryError(f"{server}: connection failed: {exc}") from None
        finally:
            await close_stream(writer)
        data = b"".join(chunks)
        if not data:
            raise TemporaryError(f"{server}: connection closed without an answer")
        return data
