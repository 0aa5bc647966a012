"""Every SMTP reply the front end sends itself, in one table. Where qmail-smtpd has a reply,
its code and wording are kept exactly (qmail-smtpd.c, notqmail 1.09); mailguard's own
additions carry RFC 3463 enhanced codes."""

from __future__ import annotations

from mailguard.verdict import Reply

OK = Reply(250, "ok")
FLUSHED = Reply(250, "flushed")
GO_AHEAD = Reply(354, "go ahead")
VRFY = Reply(252, "send some mail, i'll try my best")
HELP = Reply(214, "qmail home page: https://cr.yp.to/qmail.html")
UNIMPLEMENTED = Reply(502, "unimplemented (#5.5.1)")
MAIL_FIRST = Reply(503, "MAIL first (#5.5.1)")
RCPT_FIRST = Reply(503, "RCPT first (#5.5.1)")
SYNTAX = Reply(555, "syntax error (#5.5.4)")
LINE_TOO_LONG = Reply(500, "command line too long (#5.5.2)")
NOT_RCPTHOSTS = Reply(553, "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")
BADMAILFROM = Reply(553, "sorry, your envelope sender is in my badmailfrom list (#5.7.1)")
DATABYTES = Reply(552, "sorry, that message size exceeds my databytes limit (#5.3.4)")
TOO_MANY_HOPS = Reply(554, "too many hops, this message is looping (#5.4.6)")
BARE_LF = Reply(451, "See https://cr.yp.to/docs/smtplf.html.")
TIMEOUT = Reply(451, "timeout (#4.4.2)")
LOCAL_ERROR = Reply(451, "local error, please try again later (#4.3.0)")

# STARTTLS (RFC 3207) and AUTH (RFC 4954): qmail has none, so these are mailguard's own.
TLS_READY = Reply(220, "ready to start TLS")
TLS_ACTIVE = Reply(503, "TLS already active", "5.5.1")
TLS_SYNTAX = Reply(501, "syntax: STARTTLS takes no argument", "5.5.4")
AUTH_OK = Reply(235, "authentication successful", "2.7.0")
AUTH_FAILED = Reply(535, "authentication failed", "5.7.8")
AUTH_NEEDS_TLS = Reply(538, "encryption required", "5.7.11")
AUTH_ALREADY = Reply(503, "already authenticated", "5.5.1")
AUTH_IN_TRANSACTION = Reply(503, "AUTH not permitted during a mail transaction", "5.5.1")
AUTH_SYNTAX = Reply(501, "syntax: AUTH mechanism [initial-response]", "5.5.4")
AUTH_MECHANISM = Reply(504, "unrecognized authentication type", "5.5.4")
AUTH_CANCELLED = Reply(501, "authentication cancelled", "5.7.0")
AUTH_UNDECODABLE = Reply(501, "cannot decode response", "5.5.2")
AUTH_TEMPORARY = Reply(454, "temporary authentication failure", "4.7.0")
AUTH_TOO_MANY = Reply(421, "too many failed logins", "4.7.0")


def greeting(text: str) -> Reply:
    return Reply(220, f"{text} ESMTP")


def quit_reply(host: str) -> Reply:
    return Reply(221, host)


def helo_reply(host: str) -> Reply:
    return Reply(250, host)


def too_many_connections(host: str) -> Reply:
    return Reply(421, f"{host} too many connections, try again later (#4.3.2)")


def too_many_from_ip(host: str) -> Reply:
    return Reply(421, f"{host} too many connections from your address, try again later (#4.3.2)")


def shutting_down(host: str) -> Reply:
    return Reply(421, f"{host} service shutting down, try again later (#4.3.2)")
