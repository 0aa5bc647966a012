"""The admin alert message: a proper RFC 5322 message whose untrusted parts (user name,
subjects, domains) cannot add headers or break the layout."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from mailguard.notify.alert import AlertFacts, build_alert
from mailguard.settings.limits import WindowLimit
from mailguard.store.user_records import UserDetail, UserStatus, WindowCount

WINDOWS = (WindowLimit(3600, soft_messages=3, hard_messages=6),
           WindowLimit(86400, soft_messages=20, hard_messages=50, hard_rcpts=500))


def facts(user: str = "alice@example.com", subjects: int = 7, suspended: bool = False,
          domains: tuple[tuple[str, int], ...] = (("example.org", 5), ("b.test", 2))
          ) -> AlertFacts:
    detail = UserDetail(
        UserStatus(user),
        (WindowCount(3600, 7, 12), WindowCount(86400, 9, 15)),
        domains,
        tuple((1_800_000_000.0 - i, f"subject {i}") for i in range(subjects)),
    )
    return AlertFacts(user, "messages 7 > hard 6 in 3600s", suspended, detail, WINDOWS,
                      1_800_000_000.0, "mx.test", 86400)


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_alert_has_the_headers_and_the_facts() -> None:
    data = build_alert(facts(), alert_from="mailguard@example.com", alert_to="admin@example.com",
                       message_id="<1@mx.test>")
    assert b"\r" not in data
    msg = parse(data)
    assert msg["From"] == "mailguard@example.com"
    assert msg["To"] == "admin@example.com"
    assert msg["Subject"] == "[mailguard] outbound mail limited: alice@example.com"
    assert msg["Message-ID"] == "<1@mx.test>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Date"].datetime.timestamp() == 1_800_000_000.0
    body = msg.get_content()
    assert "User:    alice@example.com" in body
    assert "Limit:   messages 7 > hard 6 in 3600s" in body
    assert "last hour: 7 messages (soft 3 / hard 6), 12 recipients (soft - / hard -)" in body
    assert "last day: 9 messages (soft 20 / hard 50), 15 recipients (soft - / hard 500)" in body
    assert "  example.org  5\n  b.test  2" in body
    assert [line for line in body.splitlines() if line.startswith("  - ")] == [
        f"  - subject {i}" for i in range(5)]  # at most 5 samples, newest first
    assert "mailguard user unsuspend" in body and "SUSPENDED" not in body


def test_suspension_and_empty_values_are_handled() -> None:
    data = build_alert(facts(subjects=0, domains=(), suspended=True), alert_from="",
                       alert_to="admin@example.com", message_id="<2@mx.test>")
    msg = parse(data)
    assert msg["From"] == "mailguard@mx.test"  # null-safe: no alert_from configured
    assert msg["Subject"] == "[mailguard] outbound mail suspended: alice@example.com"
    body = msg.get_content()
    assert "the account is SUSPENDED" in body
    assert "mailguard user unsuspend alice@example.com" in body
    assert body.count("(none recorded)") == 2


def test_hostile_user_and_subjects_cannot_inject_headers() -> None:
    evil = "x@y\r\nBcc: victim@example.net\r\n\r\nbody"
    f = facts(user=evil)
    detail = UserDetail(f.detail.status, f.detail.counts, (("a.test\nX-Evil: 1", 1),),
                        ((1.0, "hi\r\nX-Injected: yes"),))
    data = build_alert(AlertFacts(evil, "r", False, detail, WINDOWS, 1.0, "mx.test", 60),
                       alert_from="", alert_to="admin@example.com", message_id="<3@mx.test>")
    msg = parse(data)
    assert msg["Bcc"] is None and msg["X-Injected"] is None and msg["X-Evil"] is None
    assert list(msg.keys()) == ["Date", "From", "To", "Subject", "Message-ID",
                                "Auto-Submitted", "X-Mailguard-Alert", "MIME-Version",
                                "Content-Type", "Content-Transfer-Encoding"]
    body = msg.get_content()
    assert "\nBcc:" not in body and "\nX-Injected" not in body
    assert "mailguard user show 'x@y Bcc: victim@example.net body'" in body  # shell-quoted
