"""Safe text for generated mail: sanitising untrusted values, folding and RFC 2047
encoding header fields, reading an original message's header block robustly, and
assembling a text/plain message. Pure functions, standard library only.

Everything that comes from a message or from clamd is untrusted: a CR or LF in a value
would end our header line and start a new one (header injection), so controls never
reach a header or the body unreplaced."""

from __future__ import annotations

import quopri
import re
from email.header import Header, decode_header, make_header
from email.utils import formatdate

# Header block of an original message quoted into a warning: at most this many bytes
# and lines are read; the rest is summarised by one line.
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADER_LINES = 300
MAX_QUOTED_LINE = 900  # characters of one quoted header line (RFC 5322 allows 998)
MAX_VALUE = 200  # characters of one value (virus name, subject, address) in a header
_FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SPACES = re.compile(r"\s+")
# non-UTF-8 bytes of an address, kept by the front end as surrogate escapes
_SURROGATES = re.compile(r"[\ud800-\udfff]")
# RFC 5322 3.6.8: a field name is printable ASCII except the colon.
_FIELD_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")


def one_line(value: str, limit: int = MAX_VALUE) -> str:
    """`value` as one line of printable text: every control (CR, LF, NUL, tab, C1,
    Unicode line separators) becomes a space, runs of white space one space, and text
    longer than `limit` characters is cut with "...". Bytes that were not UTF-8 (surrogate
    escapes) become U+FFFD, so the text always encodes."""
    text = _SPACES.sub(" ", _CONTROLS.sub(" ", _SURROGATES.sub("\ufffd", value))).strip()
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def decoded(value: str) -> str:
    """Decode RFC 2047 encoded words for display; undecodable input is kept as it is.
    The result is untrusted (an encoded word may hide a CR LF): pass it to one_line."""
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, AssertionError):
        return value


def header_field(name: str, value: str, *, limit: int = MAX_VALUE) -> bytes:
    """One header field `Name: value\\n`, sanitised (one_line), folded at white space
    near 78 characters, RFC 2047-encoded (UTF-8) when the value is not ASCII."""
    text = one_line(value, limit)
    if not text.isascii():
        encoded = Header(text, "utf-8", header_name=name).encode(linesep="\n", maxlinelen=_FOLD_AT)
        return f"{name}: {encoded}\n".encode("ascii")
    return (_fold(f"{name}: {text}") + "\n").encode("ascii")


def address_field(name: str, addresses: list[str]) -> bytes:
    """An address list field (To:, From: with plain addresses). Addresses are not
    encoded (RFC 2047 does not apply to an addr-spec); a UTF-8 address stays UTF-8 as
    RFC 6532 allows. Controls, white space and angle brackets are replaced."""
    clean = [_ADDR_JUNK.sub("?", a)[:MAX_VALUE] for a in addresses]
    return (_fold(f"{name}: " + ", ".join(clean)) + "\n").encode("utf-8", "replace")


def raw_field(name: str, value: str) -> bytes:
    """A structured field kept as written (e.g. `"Virus scanner" <av@example.com>` or
    `undisclosed-recipients:;`): sanitised and folded; non-ASCII stays UTF-8 (RFC 6532)."""
    return (_fold(f"{name}: {one_line(value, 998 - len(name) - 2)}") + "\n").encode("utf-8")


_ADDR_JUNK = re.compile(r"[\x00-\x20\x7f-\x9f<>,;\u2028\u2029]")


def _fold(line: str) -> str:
    """Fold an ASCII field at spaces so that lines stay near 78 characters (RFC 5322
    2.2.3); a word longer than that stays whole on its own line."""
    if len(line) <= _FOLD_AT:
        return line
    out: list[str] = []
    current = ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > _FOLD_AT:
            out.append(current)
            current = " " + word
        else:
            current = f"{current} {word}" if current else word
    out.append(current)
    return "\n".join(out)


def original_headers(message: bytes) -> list[str]:
    """The header lines of `message` (bytes as received: LF or CRLF, 8-bit, broken),
    as printable text lines with continuation lines kept and nothing of the body.

    The header block ends at the first empty line or at the first line that is neither
    a field (`Name:`) nor a continuation of one: a message without a blank line, or with
    junk in its head, never leaks its body. At most MAX_HEADER_BYTES / MAX_HEADER_LINES
    are read; a cut is marked. 8-bit bytes are read as UTF-8, else replaced."""
    head = message[:MAX_HEADER_BYTES]
    cut = len(message) > MAX_HEADER_BYTES
    raw_lines = head.split(b"\n")
    if cut:
        raw_lines = raw_lines[:-1]  # the last line may be cut in the middle: drop it
    lines: list[str] = []
    ended = False
    for raw_line in raw_lines:
        raw = raw_line.rstrip(b"\r")
        if not raw.strip():
            ended = True
            break
        is_continuation = raw[:1] in (b" ", b"\t")
        if not (_FIELD_LINE.match(raw) or (is_continuation and lines)):
            ended = True
            break
        if len(lines) >= MAX_HEADER_LINES:
            break
        text = raw.decode("utf-8", "replace").replace("\t", " ")
        text = _CONTROLS.sub("?", text)
        if len(text) > MAX_QUOTED_LINE:
            text = text[: MAX_QUOTED_LINE - 3] + "..."
        lines.append(text)
    else:
        ended = not cut
    if not ended or len(lines) >= MAX_HEADER_LINES:
        lines.append("[... further header lines omitted]")
    return lines


def header_value(lines: list[str], name: str) -> str | None:
    """The unfolded value of the first field `name` in `lines` (from original_headers)."""
    prefix = name.lower() + ":"
    for i, line in enumerate(lines):
        if line.lower().startswith(prefix):
            parts = [line[len(prefix) :]]
            for cont in lines[i + 1 :]:
                if cont[:1] != " ":
                    break
                parts.append(cont)
            return " ".join(p.strip() for p in parts)
    return None


def text_message(fields: list[bytes], body: str) -> bytes:
    """A complete message: `fields` (each from header_field/address_field), MIME headers
    and the UTF-8 body with LF line ends — 7bit when it is plain ASCII with short lines,
    else quoted-printable (safe through any relay, 8BITMIME or not)."""
    text = body.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    data = text.encode("utf-8")
    if text.isascii() and all(len(line) <= 998 for line in text.split("\n")):
        cte = "7bit"
    else:
        cte = "quoted-printable"
        data = quopri.encodestring(data, quotetabs=False)
    mime = (
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: " + cte.encode("ascii") + b"\n"
    )
    return b"".join(fields) + mime + b"\n" + data


def rfc5322_date(now: float) -> str:
    """The Date: value for `now` (seconds since the epoch) in UTC, as `+0000`: the zone
    name "GMT" is obsolete syntax that RFC 5322 4.3 says not to generate."""
    return formatdate(now, localtime=False).replace(" -0000", " +0000")
