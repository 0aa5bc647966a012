"""The control socket's wire format (docs/control-socket.md). Standard library only and
cheap to import: the lean `mailguard smtpd` / `mailguard queue` processes use it, so it
avoids `json` (which pulls in `re`, ~10 ms) and `socket` (enum, selectors) in favour of
their C halves `_json` and `_socket`; what it writes is plain JSON.

A request is one JSON object on one line, sent with `sendmsg` on a unix stream socket;
the file descriptors it hands over ride as SCM_RIGHTS ancillary data on the first bytes
of that line. Replies are JSON lines without descriptors. Version 1:

    {"v": 1, "op": "smtp", "env": {...}}                     fds: [client socket]
    {"v": 1, "op": "queue", "env": {...}, "fd6": true}        fds: [message, envelope]
    replies to smtp:  {"taken": true}, then {"done": true} when the session is over
    replies to queue: {"taken": true}, then {"exit": N, "text": "D..."|"Z..."|""}
    instead of either: {"error": "..."}

`taken` acknowledges the work at once; a caller that does not get it within
ACK_TIMEOUT_S (a daemon stopped or hung, whose listen backlog still accepted the
connection) gives up and closes: the daemon then finds it cannot send `taken` and drops
the work. An `error` reply means the daemon did not take the work: the caller fails safe.
"""

from __future__ import annotations

import _socket
import sys
from _json import encode_basestring_ascii as _quote
from _json import scanstring as _scanstring

VERSION = 1
MAX_LINE = 1 << 20  # a request line (mostly the environment) larger than this is refused
MAX_FDS = 4
ACK_TIMEOUT_S = 5.0  # the daemon must answer `taken` by then (docs/control-socket.md)
_INT = 4  # sizeof(int): SCM_RIGHTS carries an array of C ints

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours it)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    Message = dict[str, Any]


class ProtocolError(Exception):
    """The peer broke the framing: a truncated, oversized or malformed line."""


def encode(obj: Mapping[str, Any]) -> bytes:
    """One JSON line. Strings with undecodable bytes (environment values, as os.environ
    holds them) keep their surrogate escapes; decoding gives the same str back."""
    return _value(obj).encode("ascii") + b"\n"


def _value(v: Any) -> str:
    if isinstance(v, str):
        return str(_quote(v))
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(f"{_quote(str(k))}:{_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot encode {type(v).__name__}")


def decode(line: bytes) -> Message:
    """Parse one JSON object line: strings, integers, true/false/null and nested objects
    (the whole vocabulary of this protocol)."""
    try:
        text = line.decode("ascii")
        obj, end = _parse(text.strip(), 0)
        if end != len(text.strip()) or not isinstance(obj, dict):
            raise ValueError("expected one JSON object")
    except (ValueError, IndexError, RecursionError) as exc:  # deep nesting: not ours
        raise ProtocolError(f"bad message: {exc}") from None
    except SystemError:
        # _json.scanstring on a bad escape or a raw control character wants to raise
        # json's JSONDecodeError; in a lean process `json` is not imported, and it fails
        # with "returned NULL without setting an exception" instead
        raise ProtocolError("bad message: malformed string") from None
    return obj


def _parse(s: str, i: int) -> tuple[Any, int]:
    c = s[i]
    if c == '"':
        return _scanstring(s, i + 1, True)
    if c == "{":
        out: dict[str, Any] = {}
        i += 1
        if s[i] == "}":
            return out, i + 1
        while True:
            if s[i] != '"':
                raise ValueError(f"expected a key at {i}")
            key, i = _scanstring(s, i + 1, True)
            if s[i] != ":":
                raise ValueError(f"expected ':' at {i}")
            out[key], i = _parse(s, i + 1)
            if s[i] == "}":
                return out, i + 1
            if s[i] != ",":
                raise ValueError(f"expected ',' at {i}")
            i += 1
    for word, val in (("true", True), ("false", False), ("null", None)):
        if s.startswith(word, i):
            return val, i + len(word)
    j = i + 1 if c == "-" else i
    while j < len(s) and s[j].isdigit():
        j += 1
    if j == i or s[i:j] == "-":
        raise ValueError(f"unexpected {c!r} at {i}")
    return int(s[i:j]), j


def pack_fds(fds: Sequence[int]) -> bytes:
    return b"".join(fd.to_bytes(_INT, sys.byteorder, signed=True) for fd in fds)


def unpack_fds(anc: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in recvmsg's ancillary data."""
    fds: list[int] = []
    for level, kind, data in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [
                int.from_bytes(data[i : i + _INT], sys.byteorder, signed=True)
                for i in range(0, len(data) - len(data) % _INT, _INT)
            ]
    return fds


ANCILLARY_SPACE = _socket.CMSG_SPACE(MAX_FDS * _INT)


def connect(path: str, timeout_s: float | None) -> _socket.socket:
    """A connected client socket; OSError when the daemon is unreachable."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def send_request(sock: _socket.socket, obj: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    """Send a request line with `fds` attached."""
    data = encode(obj)
    anc = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, pack_fds(fds))] if fds else []
    sent = sock.sendmsg([data], anc)
    while sent < len(data):
        sent += sock.send(data[sent:])


class LineReader:
    """Reads reply lines from a blocking socket (the lean side)."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock
        self._buf = b""

    def read(self) -> Message | None:
        """The next reply, or None when the daemon closed the connection first."""
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                return None
            self._buf += chunk
            if len(self._buf) > MAX_LINE:
                raise ProtocolError("reply too long")
        line, self._buf = self._buf.split(b"\n", 1)
        return decode(line)
