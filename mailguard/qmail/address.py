"""MAIL FROM / RCPT TO argument parsing, the way qmail-smtpd's `addrparse()` does it.

The address rules are qmail's, byte for byte (qmail-smtpd.c `addrparse`): the first `<`
starts the path (without one the address follows the first `:` and ends at a space), a
leading source route `@a,@b:` is dropped, `"` quotes are removed and `\\` escapes the next
character, and nothing else is checked.  What follows the terminator is split into ESMTP
parameters (RFC 5321 4.1.2), which qmail itself ignores.

Standard library only: imported by the lean per-connection processes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

from mailguard.errors import PermanentError
from mailguard.netaddr import IPAddress, plain_ip
from mailguard.qmail import replies
from mailguard.verdict import Reply

Kind = Literal["mail", "rcpt"]


# qmail-smtpd.c: `if (addr.len > 900) return 0;` where len counts the trailing NUL,
# so the longest accepted address is 899 bytes.
MAX_ADDRESS_BYTES = 899

# Parameters the daemon may advertise: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531).
KNOWN_PARAMS: dict[Kind, frozenset[str]] = {
    "mail": frozenset({"SIZE", "BODY", "SMTPUTF8"}),
    "rcpt": frozenset(),
}
_BODY_VALUES = frozenset({"7BIT", "8BITMIME"})
_MAX_SIZE_DIGITS = 20


class AddressError(PermanentError):
    """A syntax error in a MAIL/RCPT argument; `reply` is what the client must be told."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        super().__init__(str(reply))


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed MAIL/RCPT argument: the bare address ("" is the null sender) and the ESMTP
    parameters with upper-cased names (a parameter without `=` has the value "")."""

    address: str
    params: dict[str, str] = field(default_factory=dict)


def parse_path(
    arg: str,
    *,
    kind: Kind,
    strict_params: bool = False,
    local_ips: Collection[str] = (),
    localiphost: str | None = None,
    ignore_params: bool = False,
) -> Path:
    """Parse the text after the verb (`FROM:<a@b> SIZE=10`) the way qmail-smtpd does.

    Like qmail, `FROM:`/`TO:` is not checked: `MAIL` alone, or `MAIL a@b` (no colon, no
    `<`), is the null sender.  Unlike qmail, an empty recipient is a syntax error (qmail
    would queue an undeliverable empty `T` line).  `strict_params` rejects parameters the
    daemon did not advertise (RFC 5321); off, they are returned and ignored like qmail
    ignores them.  The values of SIZE, BODY and SMTPUTF8 are always checked, as the daemon
    acts on them.  With `localiphost` set, `u@[local ip]` is rewritten before the length
    check, as in qmail.  `ignore_params`: whatever follows the address is dropped unread,
    values included, as qmail-smtpd does (no extension was offered to use them).
    """
    address, rest = _addrparse(arg)
    if localiphost is not None:
        address = rewrite_local_literal(address, local_ips, localiphost)
    if len(address.encode("utf-8", "surrogateescape")) > MAX_ADDRESS_BYTES:
        raise AddressError(replies.SYNTAX)
    if kind == "rcpt" and not address:
        raise AddressError(replies.SYNTAX)
    if ignore_params:
        return Path(address, {})
    return Path(address, _parse_params(rest, kind, strict=strict_params))


def _addrparse(arg: str) -> tuple[str, str]:
    """qmail-smtpd.c addrparse(): returns the unquoted address and the text after its
    terminator ("" when the terminator never came: qmail does not check for it)."""
    # qmail works on C strings: an embedded NUL ends the command line.
    s = arg.split("\0", 1)[0]
    lt = s.find("<")
    if lt >= 0:
        pos, terminator = lt + 1, ">"
    else:  # "partner should go read rfc 821"
        terminator = " "
        colon = s.find(":")
        pos = colon + 1 if colon >= 0 else len(s)
        while pos < len(s) and s[pos] == " ":
            pos += 1
    if s.startswith("@", pos):  # strip source route: everything up to the first ':'
        colon = s.find(":", pos)
        pos = colon + 1 if colon >= 0 else len(s)
    out: list[str] = []
    escaped = quoted = False
    for i in range(pos, len(s)):
        ch = s[i]
        if escaped:
            out.append(ch)
            escaped = False
        elif not quoted and ch == terminator:
            return "".join(out), s[i + 1 :]
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        else:
            out.append(ch)
    return "".join(out), ""


def _parse_params(rest: str, kind: Kind, *, strict: bool) -> dict[str, str]:
    params: dict[str, str] = {}
    known = KNOWN_PARAMS[kind]
    for token in rest.split():
        name, sep, value = token.partition("=")
        name = name.upper()
        if name in known:
            if strict and name in params:
                raise AddressError(replies.SYNTAX)
            params[name] = _check_value(name, bool(sep), value)
        elif strict:
            raise AddressError(replies.UNKNOWN_PARAM)
        elif name:  # qmail ignores whatever follows the address; keep it for the caller
            params[name] = value
    return params


def _check_value(name: str, has_value: bool, value: str) -> str:
    if name == "SIZE":  # RFC 1870: size-value ::= 1*20DIGIT
        ok = value.isascii() and value.isdigit() and len(value) <= _MAX_SIZE_DIGITS
    elif name == "BODY":  # RFC 6152; BINARYMIME needs CHUNKING, which we lack
        value = value.upper()
        ok = value in _BODY_VALUES
    else:  # SMTPUTF8 takes no value (RFC 6531 3.4)
        ok = not has_value
    if not ok:
        raise AddressError(replies.SYNTAX)
    return value


def rewrite_local_literal(addr: str, local_ips: Collection[str], localiphost: str) -> str:
    """`u@[192.0.2.1]` becomes `u@<localiphost>` when 192.0.2.1 is one of our addresses,
    so that the rcpthosts check sees a real domain (qmail-smtpd.c addrparse, ipme_is).

    Like qmail's ip_scan, leading zeros are accepted (`[127.000.000.001]`); unlike it, an
    octet over 255 is no address rather than wrapping.  `[IPv6:...]` (RFC 5321 4.1.3) is
    matched too, and IPv4-mapped IPv6 local addresses count as their IPv4 form.
    Raises ValueError when an entry of `local_ips` is not an IP address (a config bug).
    """
    at = addr.rfind("@")
    if at < 0:
        return addr
    literal = _literal_ip(addr[at + 1 :])
    if literal is None:
        return addr
    if literal not in {_normalise_ip(ip) for ip in local_ips}:
        return addr
    return addr[: at + 1] + localiphost


def _normalise_ip(text: str) -> IPAddress:
    return plain_ip(ipaddress.ip_address(text.split("%", 1)[0]))  # drop an IPv6 zone id


def _literal_ip(domain: str) -> IPAddress | None:
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        try:
            return _normalise_ip(ipaddress.IPv6Address(inner[5:]).compressed)
        except ValueError:
            return None
    parts = inner.split(".")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    octets = [int(p) for p in parts]
    if any(o > 255 for o in octets):
        return None
    return ipaddress.IPv4Address(bytes(octets))
