"""The admin alert for outbound abuse: one message per incident naming the user, the
counts per window against the limits, the top recipient domains and sample subjects.
Pure: the caller passes the time and the Message-ID and delivers the bytes.

Every value from the user (name, subjects, domains) is untrusted: it goes through
notify.mime's sanitisers, so it can neither add a header nor break the layout."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from mailguard.notify.mime import address_field, header_field, one_line, rfc5322_date, text_message
from mailguard.settings.limits import WindowLimit, describe_period
from mailguard.store.user_records import UserDetail

SAMPLE_SUBJECTS = 5
TOP_DOMAINS = 10


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What the alert says."""

    user: str
    reason: str  # which limit was passed, e.g. "messages 201 > hard 200 in 3600s"
    suspended: bool  # the account is being suspended because of this incident
    detail: UserDetail
    windows: Sequence[WindowLimit]
    now: float
    hostname: str
    incident_s: int  # no further alert for this user before this many seconds


def _limit(soft: int, hard: int) -> str:
    return f"soft {soft or '-'} / hard {hard or '-'}"


def alert_from_header(alert_from: str, hostname: str) -> str:
    """The From: address: alert_from, else mailguard@<hostname>."""
    return alert_from or f"mailguard@{hostname}"


def alert_body(f: AlertFacts) -> str:
    user = one_line(f.user)
    quoted = shlex.quote(user)
    lines = [
        f"mailguard on {one_line(f.hostname)} saw unusual outbound mail from one user.",
        "",
        f"User:    {user}",
        f"Limit:   {one_line(f.reason)}",
        f"When:    {rfc5322_date(f.now)}",
    ]
    if f.suspended:
        lines += [
            "Action:  the account is SUSPENDED: its mail is refused with 451 4.7.1 until",
            f"         you run: mailguard user unsuspend {quoted}",
        ]
    else:
        lines += [
            "Action:  its mail is delayed past the soft limits and refused with 451 4.7.1",
            "         past the hard limits, until the windows free.",
        ]
    lines += ["", "Counts (messages, recipients) against the limits:"]
    counts = {c.period_s: c for c in f.detail.counts}
    for w in f.windows:
        c = counts.get(w.period_s)
        msgs, rcpts = (c.messages, c.rcpts) if c else (0, 0)
        lines.append(
            f"  last {describe_period(w.period_s)}: {msgs} messages "
            f"({_limit(w.soft_messages, w.hard_messages)}), {rcpts} recipients "
            f"({_limit(w.soft_rcpts, w.hard_rcpts)})"
        )
    lines += ["", "Top recipient domains (messages):"]
    domains = f.detail.top_domains[:TOP_DOMAINS]
    lines += [f"  {one_line(d, 100)}  {n}" for d, n in domains] or ["  (none recorded)"]
    lines += ["", "Sample subjects (newest first):"]
    subjects = f.detail.subjects[:SAMPLE_SUBJECTS]
    lines += [f"  - {one_line(s)}" for _, s in subjects] or ["  (none recorded)"]
    lines += [
        "",
        "What you can do:",
        f"  mailguard user show {quoted}",
        f"  mailguard user suspend {quoted} --reason '...'",
        f"  mailguard user unsuspend {quoted}",
        "  mailguard panic on        (stops all relaying on every MX host)",
        "",
        f"One alert per incident: none for this user in the next {f.incident_s} seconds.",
    ]
    return "\n".join(lines)


def build_alert(f: AlertFacts, *, alert_from: str, alert_to: str, message_id: str) -> bytes:
    """The complete RFC 5322 message (LF line ends, qmail's stored form)."""
    state = "suspended" if f.suspended else "limited"
    fields = [
        header_field("Date", rfc5322_date(f.now)),
        address_field("From", [alert_from_header(alert_from, f.hostname)]),
        address_field("To", [alert_to]),
        header_field("Subject", f"[mailguard] outbound mail {state}: {f.user}"),
        header_field("Message-ID", message_id),
        # RFC 3834: no auto-replies to this, no vacation messages back to us
        b"Auto-Submitted: auto-generated\n",
        header_field("X-Mailguard-Alert", f"limits user={f.user}"),
    ]
    return text_message(fields, alert_body(f))
