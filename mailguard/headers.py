"""Header editing on a stored message (qmail's LF form; CRLF is kept if that is what the
message uses): remove headers by name, prepend ours, prefix the Subject.

Everything written here is sanitised: values are printable ASCII on one logical line,
long values are folded, so nothing from a message or a scanner can inject a header or
end the header block."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from mailguard.body import Body

_UNSAFE = re.compile(r"[^\x20-\x7e]")
_FIELD_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
FOLD_AT = 76


def _newline(message: bytes) -> bytes:
    first = message.split(b"\n", 1)[0]
    return b"\r\n" if first.endswith(b"\r") else b"\n"


def split(message: bytes) -> tuple[list[bytes], bytes]:
    """(header lines with their line ends, the rest starting at the blank line). A line
    that is neither a field (`Name:`) nor a continuation also ends the header block: a
    message without the blank line keeps its body out of our editing."""
    lines: list[bytes] = []
    pos = 0
    while pos < len(message):
        end = message.find(b"\n", pos)
        end = len(message) if end < 0 else end + 1
        line = message[pos:end]
        if line in (b"\n", b"\r\n"):
            break
        if not _FIELD_LINE.match(line) and line[:1] not in (b" ", b"\t"):
            break
        lines.append(line)
        pos = end
    return lines, message[pos:]


def _fields(lines: list[bytes]) -> list[list[bytes]]:
    """Group header lines into fields (a field = its first line + continuation lines)."""
    out: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and out:
            out[-1].append(line)
        else:
            out.append([line])
    return out


def field_name(first_line: bytes) -> str:
    return first_line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()


def edit(
    message: bytes,
    *,
    drop: Callable[[str], bool] = lambda _name: False,
    prepend: Sequence[str] = (),
    subject_prefix: str = "",
) -> bytes:
    """Remove the fields whose lower-case name `drop` accepts, put `prepend` (complete
    `Name: value` lines from `header_line`) on top, and put `subject_prefix` before the
    Subject (adding a Subject when there is none)."""
    nl = _newline(message)
    lines, rest = split(message)
    kept: list[list[bytes]] = [f for f in _fields(lines) if not drop(field_name(f[0]))]
    if subject_prefix:
        prefix = sanitise(subject_prefix).encode("ascii")
        for f in kept:
            if field_name(f[0]) == "subject":
                _, colon, value = f[0].partition(b":")
                value = value.lstrip(b" \t")
                unfolded = b"".join([value, *f[1:]]).lstrip(b" \t\r\n")
                if not unfolded.startswith(prefix):
                    f[0] = f[0].split(b":", 1)[0] + colon + b" " + prefix + b" " + value
                break
        else:
            if kept and not kept[-1][-1].endswith(b"\n"):
                kept[-1][-1] += nl  # the message ended inside its header block
            kept.append([b"Subject: " + prefix + nl])
    top = b"".join(line.replace("\n", nl.decode()).encode("ascii") + nl for line in prepend)
    return top + b"".join(b"".join(f) for f in kept) + rest


def edit_body(
    body: Body,
    *,
    drop: Callable[[str], bool] = lambda _name: False,
    prepend: Sequence[str] = (),
    subject_prefix: str = "",
) -> Body:
    """`edit` on the header block of `body` only: the result shares the rest of the
    message (a spooled one is never copied)."""
    head = body.header_block()
    return body.replace_head(len(head), edit(head, drop=drop, prepend=prepend,
                                             subject_prefix=subject_prefix))


def sanitise(value: str) -> str:
    """One line of printable ASCII: controls (CR, LF, NUL...) and non-ASCII become '?'."""
    return _UNSAFE.sub("?", value)


def header_line(name: str, value: str) -> str:
    """`Name: value`, sanitised, folded at spaces/commas near FOLD_AT columns ("\\n\\t"
    continuation; edit() turns "\\n" into the message's line end)."""
    text = f"{name}: {sanitise(value)}"
    if len(text) <= FOLD_AT:
        return text
    out: list[str] = []
    line = ""
    for token in re.findall(r"[^ ,]+[ ,]?|[ ,]", text):
        if line and len(line) + len(token) > FOLD_AT:
            out.append(line.rstrip(" "))
            line = "\t"
        line += token
    out.append(line.rstrip(" "))
    return "\n".join(o for o in out if o.strip())


def multiline_header(name: str, lines: Sequence[str]) -> str:
    """A header whose value spans lines (X-Spam-Report): each non-blank line becomes a
    sanitised continuation line, so the header block cannot end inside it."""
    body = [f"\t{sanitise(line.rstrip())[:FOLD_AT * 2]}" for line in lines if line.strip()]
    return "\n".join([f"{name}:", *body]) if body else f"{name}: (empty)"
