"""qmail's replies, word for word: qmail-smtpd's own (qmail-smtpd.c, notqmail 1.09) and
the DATA reply for each qmail-queue exit status (qmail.c's `qmail_close`).

They live here, below both the SMTP front end and the checks, so that a check can refuse
with qmail's exact text without importing the front end. Standard library and
mailguard.verdict only: the lean entry points' imports stay small."""

from __future__ import annotations

from mailguard.qmail.exitcodes import (
    EX_ADDR_TOO_LONG,
    EX_BUG,
    EX_COMPAT_ADDR_TOO_LONG,
    EX_CONFIG,
    EX_CONN_FAILED,
    EX_CONN_REJECTED,
    EX_CONN_TIMEOUT,
    EX_ENVELOPE_FORMAT,
    EX_EXEC_FAILED,
    EX_HOME_DIR,
    EX_NETWORK,
    EX_NOMEM,
    EX_PERM_REFUSED,
    EX_READ_ERROR,
    EX_TEMP_REFUSED,
    EX_TIMEOUT,
    EX_WAITPID_SURPRISE,
    EX_WRITE_ERROR,
)
from mailguard.verdict import Reply

# --- qmail-smtpd.c ------------------------------------------------------------------------

OK = Reply(250, "ok")
FLUSHED = Reply(250, "flushed")
GO_AHEAD = Reply(354, "go ahead")
VRFY = Reply(252, "send some mail, i'll try my best")
HELP = Reply(214, "notqmail home page: https://notqmail.org")  # default; see control.smtpd_texts
UNIMPLEMENTED = Reply(502, "unimplemented (#5.5.1)")
MAIL_FIRST = Reply(503, "MAIL first (#5.5.1)")
RCPT_FIRST = Reply(503, "RCPT first (#5.5.1)")
SYNTAX = Reply(555, "syntax error (#5.5.4)")  # err_syntax(): every malformed path or parameter
LINE_TOO_LONG = Reply(500, "command line too long (#5.5.2)")
NOT_RCPTHOSTS = Reply(553, "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")
BADMAILFROM = Reply(553, "sorry, your envelope sender is in my badmailfrom list (#5.7.1)")
DATABYTES = Reply(552, "sorry, that message size exceeds my databytes limit (#5.3.4)")
TOO_MANY_HOPS = Reply(554, "too many hops, this message is looping (#5.4.6)")
BARE_LF = Reply(451, "See https://cr.yp.to/docs/smtplf.html.")
TIMEOUT = Reply(451, "timeout (#4.4.2)")
LOCAL_ERROR = Reply(451, "local error, please try again later (#4.3.0)")

# Ours, in qmail-smtpd's style. RFC 5321 4.1.1.11: unknown MAIL/RCPT parameters get 555.
UNKNOWN_PARAM = Reply(555, "unrecognized parameter (#5.5.4)")
# A local domain, but a local part that another MTA could route on.
RELAY_TRICK = Reply(
    553, "sorry, that address is not allowed here: relaying through %, ! or @ is refused (#5.7.1)"
)


def greeting(text: str) -> Reply:
    return Reply(220, f"{text} ESMTP")


def quit_reply(host: str) -> Reply:
    return Reply(221, host)


def helo_reply(host: str) -> Reply:
    return Reply(250, host)


def accepted_reply(unix_time: float, qp: int | str) -> Reply:
    """acceptmessage(): `250 ok <time> qp <pid of qmail-queue>` (our spool: its id)."""
    return Reply(250, f"ok {int(unix_time)} qp {qp}")


# --- qmail.c qmail_close(): qmail-queue's exit status → the DATA reply ---------------------

QQ_TEMP = "qq temporary problem (#4.3.0)"  # any status qmail does not name, except 11-40
QQ_PERM = "qq permanent problem (#5.3.0)"  # statuses 11-40 qmail does not name
QQ_CRASHED = Reply(451, "qq crashed (#4.3.0)")  # qmail-queue killed by a signal

# exit status → (permanent?, text); every line is one `case` of qmail_close. qmail-smtpd
# answers "554 <text>" for a permanent failure and "451 <text>" for a temporary one.
QUEUE_EXIT_TEXTS: dict[int, tuple[bool, str]] = {
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

# What our own Maildir spool answers when it cannot store a message: qmail-queue's
# "write error or disk full", which is what happened.
QQ_WRITE_ERROR = Reply(451, QUEUE_EXIT_TEXTS[EX_WRITE_ERROR][1])
