"""Every SMTP reply the front end sends itself, in one table. Where qmail-smtpd has a reply,
its code and wording are kept exactly (qmail-smtpd.c, notqmail 1.09; defined in
mailguard.qmail.replies); mailguard's own additions carry RFC 3463 enhanced codes."""

from __future__ import annotations

# qmail-smtpd's replies (and ours in its style) live in mailguard.qmail.replies, which the
# checks use too; this module re-exports them so the front end has one table to read.
from mailguard.qmail.replies import (
    BADMAILFROM,
    BARE_LF,
    DATABYTES,
    FLUSHED,
    GO_AHEAD,
    HELP,
    LINE_TOO_LONG,
    LOCAL_ERROR,
    MAIL_FIRST,
    NOT_RCPTHOSTS,
    OK,
    QQ_WRITE_ERROR,
    RCPT_FIRST,
    SYNTAX,
    TIMEOUT,
    TOO_MANY_HOPS,
    UNIMPLEMENTED,
    VRFY,
    greeting,
    helo_reply,
    quit_reply,
)
from mailguard.verdict import Reply

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


def too_many_connections(host: str) -> Reply:
    return Reply(421, f"{host} too many connections, try again later (#4.3.2)")


def too_many_from_ip(host: str) -> Reply:
    return Reply(421, f"{host} too many connections from your address, try again later (#4.3.2)")


def shutting_down(host: str) -> Reply:
    return Reply(421, f"{host} service shutting down, try again later (#4.3.2)")


__all__ = [
    "AUTH_ALREADY",
    "AUTH_CANCELLED",
    "AUTH_FAILED",
    "AUTH_IN_TRANSACTION",
    "AUTH_MECHANISM",
    "AUTH_NEEDS_TLS",
    "AUTH_OK",
    "AUTH_SYNTAX",
    "AUTH_TEMPORARY",
    "AUTH_TOO_MANY",
    "AUTH_UNDECODABLE",
    "BADMAILFROM",
    "BARE_LF",
    "DATABYTES",
    "FLUSHED",
    "GO_AHEAD",
    "HELP",
    "LINE_TOO_LONG",
    "LOCAL_ERROR",
    "MAIL_FIRST",
    "NOT_RCPTHOSTS",
    "OK",
    "QQ_WRITE_ERROR",
    "RCPT_FIRST",
    "SYNTAX",
    "TIMEOUT",
    "TLS_ACTIVE",
    "TLS_READY",
    "TLS_SYNTAX",
    "TOO_MANY_HOPS",
    "UNIMPLEMENTED",
    "VRFY",
    "greeting",
    "helo_reply",
    "quit_reply",
    "shutting_down",
    "too_many_connections",
    "too_many_from_ip",
]
