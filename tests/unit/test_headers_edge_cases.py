"""Header editing of the QUEUE stage on messages as they come: no final newline, a
folded Subject starting on its continuation line, a body without the blank line."""

from __future__ import annotations

import pytest

from mailguard.headers import edit


@pytest.mark.parametrize(("message", "want"), [
    # the header block ends the message without a newline: the Subject we add must not
    # be glued to the last header
    (b"From: a\nTo: b", b"X-A: 1\nFrom: a\nTo: b\nSubject: [SPAM]\n"),
    (b"From: a\r\nTo: b", b"X-A: 1\r\nFrom: a\r\nTo: b\r\nSubject: [SPAM]\r\n"),
    # a folded Subject whose text starts on the continuation line, already tagged
    (b"Subject:\n\t[SPAM] folded\n\nbody\n", b"X-A: 1\nSubject:\n\t[SPAM] folded\n\nbody\n"),
    (b"Subject: \r\n [SPAM] x\r\n\r\nb\r\n", b"X-A: 1\r\nSubject: \r\n [SPAM] x\r\n\r\nb\r\n"),
    # not tagged yet: tagged once
    (b"Subject:\n\tfolded\n\nbody\n", b"X-A: 1\nSubject: [SPAM] \n\tfolded\n\nbody\n"),
    # no blank line before the body: the Subject goes into the header block, not after
    # the body's first lines (where a reader would never see it)
    (b"Received: x\nbody line without separator\nmore\n",
     b"X-A: 1\nReceived: x\nSubject: [SPAM]\nbody line without separator\nmore\n"),
])
def test_subject_prefix_and_header_block_stay_well_formed(message: bytes, want: bytes) -> None:
    out = edit(message, prepend=["X-A: 1"], subject_prefix="[SPAM]")
    assert out == want
    assert edit(out, subject_prefix="[SPAM]") == out  # never twice


def test_body_lines_that_look_like_ours_are_not_dropped_without_a_blank_line() -> None:
    message = b"Received: x\nnot a header\nX-Spam-Flag: YES\n"
    assert edit(message, drop=lambda n: n.startswith("x-spam-")) == message
