"""qmail-queue exit statuses and the DATA reply qmail-smtpd gives for each.

The table is qmail.c's `qmail_close` (netqmail 1.06 / notqmail): it returns "D<text>" for a
permanent failure and "Z<text>" for a temporary one, and qmail-smtpd answers
"554 <text>" or "451 <text>". Codes qmail does not name fall back to 11-40 → permanent,
anything else → temporary (qmail-queue(8)).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from mailguard.verdict import Reply

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

_TEMP = "qq temporary problem (#4.3.0)"
_PERM = "qq permanent problem (#5.3.0)"

# exit status → (permanent?, text); every line is one `case` of qmail.c's qmail_close.
_TABLE: dict[int, tuple[bool, str]] = {
    EX_ADDR_TOO_LONG: (True, "envelope address too long for qq (#5.1.3)"),
    EX_COMPAT_ADDR_TOO_LONG: (True, "envelope address too long for qq (#5.1.3)"),
    EX_PERM_REFUSED: (True, "mail server permanently rejected message (#5.3.0)"),
    EX_NOMEM: (False, "qq out of memory (#4.3.0)"),
    EX_TIMEOUT: (False, "qq timeout (#4.3.0)"),
    EX_WRITE_ERROR: (False, "qq write error or disk full (#4.3.0)"),
    EX_READ_ERROR: (False, "qq read error (#4.3.0)"),
    EX_CONFIG: (False, "qq unable to read configuration (#4.3.0)"),
    EX_NETWORK: (False, "qq trouble making network connection (#4.3.0)"),
    EX_HOME_DIR: (False, "qq trouble in home directory (#4.3.0)"),
    **{c: (False, "qq trouble creating files in queue (#4.3.0)") for c in range(62, 67)},
    EX_TEMP_REFUSED: (False, "mail server temporarily rejected message (#4.3.0)"),
    EX_CONN_TIMEOUT: (False, "connection to mail server timed out (#4.4.1)"),
    EX_CONN_REJECTED: (False, "connection to mail server rejected (#4.4.1)"),
    EX_CONN_FAILED: (False, "communication with mail server failed (#4.4.2)"),
    EX_BUG: (False, "qq internal bug (#4.3.0)"),
    EX_ENVELOPE_FORMAT: (False, "qq internal bug (#4.3.0)"),
    EX_EXEC_FAILED: (False, "unable to exec qq (#4.3.0)"),
    EX_WAITPID_SURPRISE: (False, "qq waitpid surprise (#4.3.0)"),
}


def _reply(code: int, text: str) -> Reply:
    # Imported on first use: mailguard.verdict brings dataclasses and enum (~20 ms), which a
    # per-message wrapper that only needs the exit-status constants should not pay for.
    from mailguard.verdict import Reply  # noqa: PLC0415

    return Reply(code, text)


def accepted_reply(unix_time: float, qp: int) -> Reply:
    """qmail-smtpd's acceptmessage(): `250 ok <time> qp <pid of qmail-queue>`."""
    return _reply(250, f"ok {int(unix_time)} qp {qp}")


def reply_for_exit(code: int, custom: bytes = b"") -> Reply:
    """The DATA reply qmail-smtpd gives when qmail-queue exits with `code` (never 0).

    `custom` is what the program wrote to fd 6; only exit 82 uses it. A negative code means
    "killed by a signal" (asyncio's convention) and gives `451 qq crashed`.
    """
    if code == EX_OK:
        raise ValueError("exit 0 is success: use accepted_reply(time, qp)")
    if code < 0:  # qmail.c: wait_crashed(wstat)
        return _reply(451, "qq crashed (#4.3.0)")
    if code == EX_CUSTOM:
        reply = custom_reply(custom)
        if reply is not None:
            return reply
    entry = _TABLE.get(code)
    if entry is not None:
        return _reply(554 if entry[0] else 451, entry[1])
    # qmail.c default: "if ((exitcode >= 11) && (exitcode <= 40)) Dqq permanent problem".
    if 11 <= code <= 40:
        return _reply(554, _PERM)
    return _reply(451, _TEMP)


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
