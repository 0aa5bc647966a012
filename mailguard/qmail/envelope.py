"""The qmail-queue envelope codec: `F<sender>\\0T<rcpt>\\0...T<rcpt>\\0\\0` on fd 1.

Addresses stay bytes (qmail is 8-bit clean); the str helpers use UTF-8 with
surrogateescape, so any byte string round-trips through str and back unchanged.
Parsing follows qmail-queue.c byte for byte, including which exit status each defect gets.
"""

from __future__ import annotations

from mailguard.errors import MailguardError

# typing's TYPE_CHECKING without importing typing (mypy honours the name); collections.abc
# is only needed by the type checker. Both keep the per-message import cheap.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

# qmail-queue.c: `#define ADDR 1003`; an address of ADDR bytes or more (without its NUL) is
# refused with exit 11.
ADDR_MAX = 1003

# Exit statuses used by qmail-queue for envelope defects (see mailguard.qmail.exitcodes).
_EX_ADDR_TOO_LONG = 11
_EX_READ_ERROR = 54
_EX_ENVELOPE_FORMAT = 91


class EnvelopeError(MailguardError, ValueError):
    """A malformed envelope; `exit_code` is what the real qmail-queue exits with for it."""

    def __init__(self, exit_code: int, reason: str) -> None:
        self.exit_code = exit_code
        self.reason = reason
        super().__init__(f"{reason} (qmail-queue exit {exit_code})")


def _to_bytes(addr: str | bytes) -> bytes:
    return addr if isinstance(addr, bytes) else addr.encode("utf-8", "surrogateescape")


def _to_str(addr: bytes) -> str:
    return addr.decode("utf-8", "surrogateescape")


class Envelope:
    """Sender (b"" for the null sender) and recipients, as qmail-queue receives them.

    Immutable and compared by value; a plain slotted class rather than a dataclass because
    importing dataclasses costs the per-message entry point ~20 ms.
    """

    __slots__ = ("rcpts", "sender")

    sender: bytes
    rcpts: tuple[bytes, ...]

    def __init__(self, sender: bytes, rcpts: tuple[bytes, ...]) -> None:
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "rcpts", tuple(rcpts))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Envelope is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return (self.sender, self.rcpts) == (other.sender, other.rcpts)

    def __hash__(self) -> int:
        return hash((self.sender, self.rcpts))

    def __repr__(self) -> str:
        return f"Envelope(sender={self.sender!r}, rcpts={self.rcpts!r})"

    @classmethod
    def of(cls, sender: str | bytes, rcpts: Sequence[str | bytes]) -> Envelope:
        """Build from str or bytes addresses."""
        return cls(_to_bytes(sender), tuple(_to_bytes(r) for r in rcpts))

    @property
    def sender_str(self) -> str:
        return _to_str(self.sender)

    @property
    def rcpts_str(self) -> tuple[str, ...]:
        return tuple(_to_str(r) for r in self.rcpts)

    def encode(self) -> bytes:
        """The fd-1 byte string for this envelope."""
        return encode(self.sender, self.rcpts)


def encode(sender: str | bytes, rcpts: Sequence[str | bytes]) -> bytes:
    """Encode an envelope as qmail.c's qmail_from/qmail_to/qmail_close write it.

    Raises ValueError for an address containing NUL (it would end the address early and
    silently change the envelope). Length is not checked here: qmail-queue decides (exit 11).
    """
    parts = [b"F", _checked(_to_bytes(sender)), b"\0"]
    for rcpt in rcpts:
        parts += [b"T", _checked(_to_bytes(rcpt)), b"\0"]
    parts.append(b"\0")
    return b"".join(parts)


def _checked(addr: bytes) -> bytes:
    if b"\0" in addr:
        raise ValueError(f"NUL byte in envelope address {addr!r}")
    return addr


def parse(data: bytes) -> Envelope:
    """Parse an envelope exactly as qmail-queue.c reads fd 1.

    Exit statuses raised as EnvelopeError.exit_code:
      54 — empty input, or EOF inside an address or before the final NUL (die_read);
      91 — first byte not `F`, or a recipient not starting with `T`;
      11 — an address of 1003 bytes or more (checked before EOF, as qmail-queue does).
    Bytes after the final NUL are ignored: qmail-queue stops reading there.
    """
    if not data:
        raise EnvelopeError(_EX_READ_ERROR, "empty envelope")
    if data[0:1] != b"F":
        raise EnvelopeError(_EX_ENVELOPE_FORMAT, "envelope does not start with F")
    sender, pos = _address(data, 1, "sender")
    rcpts: list[bytes] = []
    while True:
        if pos >= len(data):
            raise EnvelopeError(_EX_READ_ERROR, "envelope ends before its final NUL")
        tag = data[pos]
        if tag == 0:
            return Envelope(sender, tuple(rcpts))
        if tag != ord("T"):
            raise EnvelopeError(_EX_ENVELOPE_FORMAT, f"recipient {len(rcpts) + 1} lacks T")
        rcpt, pos = _address(data, pos + 1, f"recipient {len(rcpts) + 1}")
        rcpts.append(rcpt)


def _address(data: bytes, start: int, what: str) -> tuple[bytes, int]:
    """One NUL-terminated address from `start`; returns it and the index after its NUL."""
    # qmail-queue.c reads at most ADDR bytes looking for the NUL: ADDR non-NUL bytes → 11,
    # EOF first → 54. So a too-long address wins over a truncated one.
    window = data[start : start + ADDR_MAX]
    nul = window.find(b"\0")
    if nul == -1:
        if len(window) >= ADDR_MAX:
            raise EnvelopeError(_EX_ADDR_TOO_LONG, f"{what} address too long")
        raise EnvelopeError(_EX_READ_ERROR, f"envelope ends inside the {what} address")
    return window[:nul], start + nul + 1
