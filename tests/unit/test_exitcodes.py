"""qmail-queue exit status → qmail-smtpd DATA reply, as qmail.c's qmail_close maps them."""

from __future__ import annotations

import pytest

from mailguard.qmail import exitcodes as ex
from mailguard.qmail import replies
from mailguard.verdict import Reply

TEMP = "451 qq temporary problem (#4.3.0)"
PERM = "554 qq permanent problem (#5.3.0)"

NAMED = [
    (11, "554 envelope address too long for qq (#5.1.3)"),
    (115, "554 envelope address too long for qq (#5.1.3)"),  # qmail.c: compatibility
    (31, "554 mail server permanently rejected message (#5.3.0)"),
    (51, "451 qq out of memory (#4.3.0)"),
    (52, "451 qq timeout (#4.3.0)"),
    (53, "451 qq write error or disk full (#4.3.0)"),
    (54, "451 qq read error (#4.3.0)"),
    (55, "451 qq unable to read configuration (#4.3.0)"),
    (56, "451 qq trouble making network connection (#4.3.0)"),
    (61, "451 qq trouble in home directory (#4.3.0)"),
    (62, "451 qq trouble creating files in queue (#4.3.0)"),
    (63, "451 qq trouble creating files in queue (#4.3.0)"),
    (64, "451 qq trouble creating files in queue (#4.3.0)"),
    (65, "451 qq trouble creating files in queue (#4.3.0)"),
    (66, "451 qq trouble creating files in queue (#4.3.0)"),
    (71, "451 mail server temporarily rejected message (#4.3.0)"),
    (72, "451 connection to mail server timed out (#4.4.1)"),
    (73, "451 connection to mail server rejected (#4.4.1)"),
    (74, "451 communication with mail server failed (#4.4.2)"),
    (81, "451 qq internal bug (#4.3.0)"),
    (91, "451 qq internal bug (#4.3.0)"),
    (120, "451 unable to exec qq (#4.3.0)"),
    (256, "451 qq waitpid surprise (#4.3.0)"),
]
UNNAMED_PERM = [12, 20, 30, 32, 40]  # "other 11-40"
UNNAMED_TEMP = [1, 2, 10, 41, 50, 57, 60, 67, 70, 75, 80, 82, 90, 92, 100, 111, 127, 255]


@pytest.mark.parametrize(("code", "line"), NAMED)
def test_named_codes(code: int, line: str) -> None:
    assert str(ex.reply_for_exit(code)) == line


@pytest.mark.parametrize("code", UNNAMED_PERM)
def test_other_codes_11_to_40_are_permanent(code: int) -> None:
    assert str(ex.reply_for_exit(code)) == PERM
    assert ex.is_permanent(code)


@pytest.mark.parametrize("code", UNNAMED_TEMP)
def test_every_other_code_is_temporary(code: int) -> None:
    assert str(ex.reply_for_exit(code)) == TEMP
    assert not ex.is_permanent(code)


@pytest.mark.parametrize("code", [-1, -9, -11, -15])
def test_killed_by_signal_is_a_crash(code: int) -> None:
    assert str(ex.reply_for_exit(code)) == "451 qq crashed (#4.3.0)"


def test_every_code_gives_a_4xx_or_5xx_reply_with_qmail_style_status() -> None:
    for code in range(1, 257):
        reply = ex.reply_for_exit(code)
        assert reply.code in (451, 554)
        assert ex.is_permanent(code) == (reply.code == 554)
        assert reply.text.endswith(")") and "(#" in reply.text


def test_exit_zero_is_for_the_caller() -> None:
    with pytest.raises(ValueError, match="accepted_reply"):
        ex.reply_for_exit(0)
    assert not ex.is_permanent(0)
    assert str(replies.accepted_reply(1795711998.7, 11094)) == "250 ok 1795711998 qp 11094"


@pytest.mark.parametrize(
    ("custom", "line"),
    [
        (b"Dwe don't accept email with such content (#5.3.4)", None),
        (b"Dno thanks (#5.7.1)", "554 no thanks (#5.7.1)"),
        (b"Zscanner busy, try later (#4.3.0)", "451 scanner busy, try later (#4.3.0)"),
        (b"Xnot D means temporary", "451 not D means temporary"),  # qmail-smtpd: D → 554, else 451
        (b"Dtrailing newline\n", "554 trailing newline"),
        (b"Dcrlf\r\n", "554 crlf"),
        (b"Dtwo\r\nlines", "554-two\r\n554 lines"),  # made protocol-safe: a multi-line reply
        (b"Dbad \x01\xff bytes", "554 bad ?? bytes"),
        (b"Dcut\0here", "554 cut"),  # qmail.c treats it as a C string
        (b"D" + b"x" * 300, "554 " + "x" * 254),  # only the first 255 bytes are read
        (b"", TEMP),  # no text
        (b"Dx", TEMP),  # qmail.c wants more than 2 bytes
        (b"\0\0\0", TEMP),  # qmail-smtpd would take "" as success; we refuse it
    ],
)
def test_exit_82_uses_the_fd6_text(custom: bytes, line: str | None) -> None:
    reply = ex.reply_for_exit(ex.EX_CUSTOM, custom)
    if line is None:
        assert reply == Reply(554, "we don't accept email with such content (#5.3.4)")
    else:
        assert str(reply) == line
    assert ex.is_permanent(ex.EX_CUSTOM, custom) == (reply.code == 554)


def test_fd6_text_is_ignored_unless_exit_is_82() -> None:
    assert str(ex.reply_for_exit(71, b"Dpermanent?")) == (
        "451 mail server temporarily rejected message (#4.3.0)"
    )
    assert str(ex.reply_for_exit(31, b"Ztemporary?")) == (
        "554 mail server permanently rejected message (#5.3.0)"
    )


def test_named_constants() -> None:
    assert (ex.EX_OK, ex.EX_PERM_REFUSED, ex.EX_TEMP_REFUSED) == (0, 31, 71)
    assert (ex.EX_CUSTOM, ex.EX_ENVELOPE_FORMAT, ex.EX_READ_ERROR) == (82, 91, 54)
    assert (ex.EX_ADDR_TOO_LONG, ex.EX_TIMEOUT, ex.EX_EXEC_FAILED) == (11, 52, 120)
