"""notify.mime: reading an original's headers robustly, and safe header fields."""

from __future__ import annotations

import pytest

from mailguard.notify import mime
from mailguard.notify.mime import (
    header_field,
    header_value,
    one_line,
    original_headers,
    text_message,
)

OMITTED = "[... further header lines omitted]"

# (original message bytes, header lines shown)
HEADER_CASES: list[tuple[bytes, list[str]]] = [
    (b"Subject: a\nTo: b@c\n\nbody\n", ["Subject: a", "To: b@c"]),
    (b"Subject: a\r\nTo: b@c\r\n\r\nbody\r\n", ["Subject: a", "To: b@c"]),
    # folded header: continuation kept (tab shown as a space)
    (b"Subject: a\n\tcontinued\n  more\n\nbody\n", ["Subject: a", " continued", "  more"]),
    # no blank line: the first line that is not a field starts the body
    (b"Subject: a\nthis is already the body\nX-Fake: no\n", ["Subject: a"]),
    # a body with no header at all
    (b"just a body line\n\nSubject: not a header\n", []),
    (b"", []),
    (b"\nSubject: body\n", []),
    # a continuation line before any field is not a header
    (b" indented\nSubject: x\n\n", []),
    # headers only, without a final newline: nothing omitted
    (b"Subject: a\nTo: b@c", ["Subject: a", "To: b@c"]),
    # 8-bit: UTF-8 kept, other bytes replaced
    ("Subject: café\n\n".encode() + b"", ["Subject: café"]),
    (b"Subject: caf\xe9 \xff\n\nb\n", ["Subject: caf\ufffd \ufffd"]),
    # controls inside a line: replaced, the line stays one line
    (b"Subject: a\x00b\x1bc\rd\n\n", ["Subject: a?b?c?d"]),
    # a field name with a space before the colon (obsolete syntax) still counts
    (b"Subject : a\n\n", ["Subject : a"]),
    # a line with a colon but a space in the name is the body
    (b"Subject: a\nnot a: header\n\n", ["Subject: a"]),
]


@pytest.mark.parametrize(("original", "expected"), HEADER_CASES)
def test_original_headers(original: bytes, expected: list[str]) -> None:
    assert original_headers(original) == expected


def test_original_headers_are_capped() -> None:
    many = b"".join(b"X-H%d: v\n" % i for i in range(1000)) + b"\nbody\n"
    lines = original_headers(many)
    assert len(lines) == mime.MAX_HEADER_LINES + 1 and lines[-1] == OMITTED
    huge = b"X-Big: " + b"y" * (mime.MAX_HEADER_BYTES * 2) + b"\n\nbody\n"
    assert original_headers(huge) == [OMITTED]  # the cut line is dropped, not half-shown
    long_lines = b"".join(b"X-L%d: " % i + b"z" * 2000 + b"\n" for i in range(30))
    lines = original_headers(long_lines + b"\nbody\n")
    assert lines[-1] == OMITTED
    assert all(len(line) <= mime.MAX_QUOTED_LINE for line in lines)
    assert lines[0].endswith("z...")


def test_header_value_unfolds() -> None:
    lines = ["Subject: one", "  two", "To: x", "subject: second"]
    assert header_value(lines, "SUBJECT") == "one two"
    assert header_value(lines, "to") == "x"
    assert header_value(lines, "cc") is None


# (value, one_line result)
ONE_LINE_CASES: list[tuple[str, str]] = [
    ("plain", "plain"),
    ("  a \r\n b\t c  ", "a b c"),
    ("a\x00b", "a b"),
    ("a\u2028b\u2029c\x85d", "a b c d"),
    ("x" * 300, "x" * 197 + "..."),
]


@pytest.mark.parametrize(("value", "expected"), ONE_LINE_CASES)
def test_one_line(value: str, expected: str) -> None:
    assert one_line(value) == expected


def test_header_fields_fold_and_encode() -> None:
    assert header_field("Subject", "a\r\nBcc: x") == b"Subject: a Bcc: x\n"
    folded = header_field("Subject", " ".join(["word"] * 40), limit=400)
    lines = folded.rstrip(b"\n").split(b"\n")
    assert len(lines) > 1 and all(len(x) <= 78 for x in lines)
    assert all(x.startswith(b" ") for x in lines[1:])
    encoded = header_field("Subject", "Grüße\nBcc: x")
    assert encoded.startswith(b"Subject: =?utf-8?") and encoded.count(b"\n") == 1


def test_text_message_encodings() -> None:
    ascii_msg = text_message([b"Subject: s\n"], "hello\r\nworld")
    assert ascii_msg.endswith(b"Content-Transfer-Encoding: 7bit\n\nhello\nworld\n")
    qp = text_message([], "Grüße " + "x" * 100 + "\n")
    assert b"Content-Transfer-Encoding: quoted-printable\n\nGr=C3=BC=C3=9Fe " in qp
    assert max(len(line) for line in qp.split(b"\n")) <= 76
