"""qmail-queue exit statuses and the DATA reply qmail-smtpd gives for each.

The mapping is qmail.c's `qmail_close` (netqmail 1.06 / notqmail): it returns "D<text>"
for a permanent failure and "Z<text>" for a temporary one, and qmail-smtpd answers
"554 <text>" or "451 <text>". Codes qmail does not name fall back to 11-40 → permanent,
anything else → temporary (qmail-queue(8)). The texts are in mailguard.qmail.replies.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from mailguard.verdict import Reply

# The reply texts are in mailguard.qmail.replies, imported by the functions below on first
# use: it brings mailguard.verdict (dataclasses, enum: ~20 ms), which a caller that only
# needs the exit-status constants should not pay for.

EX_OK = 0
EX_ADDR_TOO_LONG = 11  # an envelope address of 1003+ bytes
EX_PERM_REFUSED = 31  # "mail server permanently rejected message": use for virus/spam rejects
EX_NOMEM = 51
EX_TIMEOUT = 52  # qmail-queue's own 24 h alarm; also what we report when we kill it on timeout
EX_WRITE_ERROR = 53  # write error or disk full
EX_READ_ERROR = 54  # could not read the message or the envelope (bad/truncated envelope)
EX_CONFIG = 55  # unable to read configuration
EX_NETWORK = 56  # trouble making network connection
EX_HOME_DIR = 61  # trouble in home directory (qmail.c's child also uses it when chdir fails)
EX_QUEUE_DIR = 62  # 62-66: trouble creating files in the queue
EX_TEMP_REFUSED = 71  # "mail server temporarily rejected message": use for "try later"
EX_CONN_TIMEOUT = 72
EX_CONN_REJECTED = 73
EX_CONN_FAILED = 74
EX_BUG = 81  # internal bug
EX_CUSTOM = 82  # notqmail 1.09+: reply text written to fd 6 as D<text> or Z<text>
EX_ENVELOPE_FORMAT = 91  # envelope format error
EX_COMPAT_ADDR_TOO_LONG = 115  # old alias of 11 that qmail.c still maps
EX_EXEC_FAILED = 120  # qmail.c's forked child exits 120 when execv fails
# Not exit statuses: a negative code is "killed by signal -code" (asyncio's convention), and
# 256 (outside 0-255) means our child was reaped by someone else, so its status is unknown.
EX_WAITPID_SURPRISE = 256

# qmail.c reads at most 255 bytes of the fd-6 text and wants more than 2 of them.
CUSTOM_TEXT_MAX = 255


def _reply(code: int, text: str) -> Reply:
    from mailguard.verdict import Reply  # noqa: PLC0415 - see above

    return Reply(code, text)


def reply_for_exit(code: int, custom: bytes = b"") -> Reply:
    """The DATA reply qmail-smtpd gives when qmail-queue exits with `code` (never 0).

    `custom` is what the program wrote to fd 6; only exit 82 uses it. A negative code means
    "killed by a signal" (asyncio's convention) and gives `451 qq crashed`.
    """
    if code == EX_OK:
        raise ValueError("exit 0 is success: use replies.accepted_reply(time, qp)")
    from mailguard.qmail import replies  # noqa: PLC0415 - see above

    if code < 0:  # qmail.c: wait_crashed(wstat)
        return replies.QQ_CRASHED
    if code == EX_CUSTOM:
        reply = custom_reply(custom)
        if reply is not None:
            return reply
    entry = replies.QUEUE_EXIT_TEXTS.get(code)
    if entry is not None:
        return _reply(554 if entry[0] else 451, entry[1])
    # qmail.c default: "if ((exitcode >= 11) && (exitcode <= 40)) Dqq permanent problem".
    if 11 <= code <= 40:
        return _reply(554, replies.QQ_PERM)
    return _reply(451, replies.QQ_TEMP)


def is_permanent(code: int, custom: bytes = b"") -> bool:
    """True when qmail-smtpd would answer 5xx to this exit status (False for 0)."""
    return code != EX_OK and reply_for_exit(code, custom).permanent


def custom_reply(custom: bytes) -> Reply | None:
    """The reply for exit 82's fd-6 text, or None when the text is not usable.

    notqmail's qmail.c keeps the first 255 bytes, needs more than 2 of them, and treats them
    as a C string; qmail-smtpd then sends "554 " if it starts with D, else "451 ", and the rest.
    Two deliberate differences: a text starting with NUL (which qmail-smtpd would take as
    *success*) is refused, and the text is made protocol-safe: trailing CR/LF/blanks are
    dropped, inner line breaks become a multi-line reply, other unsafe bytes become "?".
    """
    raw = custom[:CUSTOM_TEXT_MAX]
    if len(raw) <= 2:
        return None
    text = raw.split(b"\0", 1)[0]
    if not text:
        return None
    code = 554 if text[:1] == b"D" else 451
    lines = text[1:].rstrip(b" \t\r\n").replace(b"\r\n", b"\n").split(b"\n")
    return _reply(code, "\n".join(_safe(line) for line in lines))


def _safe(line: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in line)
