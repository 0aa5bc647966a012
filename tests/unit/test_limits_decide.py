"""Per-user limits, the pure parts: window levels, the delay curve, the assessment over
several windows, the identity rule, the replies and what a message contributes."""

from __future__ import annotations

import ipaddress

import pytest

from mailguard.checks.limits_decide import (
    PANIC_REPLY,
    Level,
    assess,
    clean,
    delay_for,
    hard_reply,
    identity,
    level_of,
    rcpt_domains,
    subject_of,
    suspended_reply,
)
from mailguard.clock import FrozenClock
from mailguard.context import Session
from mailguard.settings.limits import WindowLimit, describe_period
from mailguard.store.user_records import WindowCount

HOUR = WindowLimit(3600, soft_messages=40, hard_messages=200, soft_rcpts=100, hard_rcpts=500)
DAY = WindowLimit(86400, soft_messages=300, hard_messages=1000)


@pytest.mark.parametrize(
    ("count", "soft", "hard", "expected"),
    [
        (1, 40, 200, Level.OK),
        (40, 40, 200, Level.OK),  # the 40th is still free
        (41, 40, 200, Level.SOFT),  # the 41st is delayed
        (200, 40, 200, Level.SOFT),  # the 200th still goes through, delayed
        (201, 40, 200, Level.HARD),  # the 201st is refused
        (10_000, 0, 0, Level.OK),  # 0 = no limit
        (11, 0, 10, Level.HARD),
        (10, 0, 10, Level.OK),
        (11, 10, 0, Level.SOFT),
    ],
)
def test_level_of(count: int, soft: int, hard: int, expected: Level) -> None:
    assert level_of(count, soft, hard) is expected


@pytest.mark.parametrize(
    ("count", "soft", "hard", "expected"),
    [
        (40, 40, 200, 0.0),  # not past the soft limit
        (41, 40, 200, 30.0),  # first one over: delay_min_s
        (42, 40, 200, 31.7),  # grows with the excess ...
        (120, 40, 200, 164.2),
        (200, 40, 200, 300.0),  # ... to delay_max_s at the hard limit
        (4, 3, 6, 30.0),
        (5, 3, 6, 165.0),
        (6, 3, 6, 300.0),
        (4, 3, 4, 30.0),  # a span of one: the first over gets the minimum
        (11, 10, 0, 30.0),  # no hard limit: reaches the max after another `soft`
        (20, 10, 0, 300.0),
        (500, 10, 0, 300.0),  # capped
        (5, 0, 10, 0.0),  # no soft limit: no delay
    ],
)
def test_delay_curve(count: int, soft: int, hard: int, expected: float) -> None:
    assert delay_for(count, soft, hard, 30, 300) == expected


def test_delays_grow_monotonically_between_soft_and_hard() -> None:
    delays = [delay_for(n, 40, 200, 30, 240) for n in range(41, 201)]
    assert delays == sorted(delays)
    assert delays[0] == 30 and delays[-1] == 240


def counts(hour: tuple[int, int] = (0, 0), day: tuple[int, int] = (0, 0)) -> list[WindowCount]:
    return [WindowCount(3600, *hour), WindowCount(86400, *day)]


@pytest.mark.parametrize(
    ("stored", "kind", "level", "delay", "period"),
    [
        (counts(), "messages", Level.OK, 0.0, 0),
        (counts((39, 90), (39, 90)), "messages", Level.OK, 0.0, 0),
        (counts((40, 90), (40, 90)), "messages", Level.SOFT, 30.0, 3600),
        # recipients past soft, but at MAIL only message delays apply
        (counts((10, 100), (10, 100)), "messages", Level.OK, 0.0, 0),
        (counts((10, 100), (10, 100)), "rcpts", Level.SOFT, 30.0, 3600),
        # a hard limit of any kind refuses, at MAIL and at RCPT alike
        (counts((10, 500), (10, 500)), "messages", Level.HARD, 0.0, 3600),
        (counts((200, 200), (200, 200)), "rcpts", Level.HARD, 0.0, 3600),
        # the hour is quiet but the day is full: the day refuses
        (counts((0, 0), (1000, 1000)), "messages", Level.HARD, 0.0, 86400),
        # both soft: the longer delay wins (hour: 41 of 40..200; day: 350 of 300..1000)
        (counts((40, 0), (349, 0)), "messages", Level.SOFT, 48.9, 86400),
    ],
)
def test_assess(stored: list[WindowCount], kind: str, level: Level, delay: float,
                period: int) -> None:
    """The projected counts include the message (at MAIL) or recipient being decided."""
    a = assess(stored, [HOUR, DAY], messages=1, rcpts=1,
               delay_kind="rcpts" if kind == "rcpts" else "messages",
               delay_min_s=30, delay_max_s=300)
    assert (a.level, a.delay_s, a.period_s) == (level, delay, period)


def test_assess_counts_missing_windows_as_empty() -> None:
    a = assess([], [HOUR], messages=1, rcpts=1, delay_kind="messages", delay_min_s=30,
               delay_max_s=300)
    assert a.level is Level.OK
    assert "within limits" in a.describe()


def session(**kw: object) -> Session:
    s = Session(ipaddress.ip_address("192.0.2.9"), 1234, FrozenClock())
    for k, v in kw.items():
        setattr(s, k, v)
    return s


@pytest.mark.parametrize(
    ("kw", "mail_from", "apply_to", "expected"),
    [
        ({"auth_user": "alice"}, "other@example.com", "relay", "alice"),
        ({"relay_client": True}, "Bob@Example.COM", "relay", "bob@example.com"),
        ({"relay_client": True}, "", "relay", "192.0.2.9"),  # null sender: the IP
        ({}, "x@example.net", "relay", None),  # a stranger: not covered
        ({}, "x@example.net", "all", "192.0.2.9"),
        ({"auth_user": "alice", "relay_client": True}, "b@example.com", "all", "alice"),
    ],
)
def test_identity(kw: dict[str, object], mail_from: str, apply_to: str,
                  expected: str | None) -> None:
    assert identity(session(**kw), mail_from, apply_to) == expected


@pytest.mark.parametrize(
    ("period", "text"),
    [(3600, "hour"), (7200, "2 hours"), (86400, "day"), (604800, "7 days"),
     (600, "10 minutes"), (90, "90 seconds")],
)
def test_describe_period(period: int, text: str) -> None:
    assert describe_period(period) == text


def test_replies_are_exact_and_injection_safe() -> None:
    assert str(hard_reply("alice@example.com", 3600)) == (
        "451 4.7.1 too much mail from alice@example.com in the last hour, try again later")
    assert str(suspended_reply("alice", "admin@example.com")) == (
        "451 4.7.1 account alice is suspended for sending too much mail; "
        "contact admin@example.com")
    assert str(PANIC_REPLY) == (
        "451 4.7.1 relaying is stopped on this server for now, try again later")
    evil = hard_reply("a\r\n250 ok\nx", 86400)
    assert len(evil.lines()) == 1 and "\n" not in evil.text and "\r" not in evil.text


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("plain", 200, "plain"),
        ("a\r\nb\tc  d\x00", 200, "a??b c d?"),
        ("x" * 10, 8, "xxxxx..."),
    ],
)
def test_clean(text: str, limit: int, expected: str) -> None:
    assert clean(text, limit) == expected


def test_rcpt_domains_distinct_lowercase_in_order() -> None:
    rcpts = ["a@B.test", "b@b.test", "c@a.test", "postmaster"]
    assert rcpt_domains(rcpts) == ["b.test", "a.test"]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"From: a@b\nSubject: Hello world\n\nbody\n", "Hello world"),
        (b"Subject: folded\n  across lines\n\nbody\n", "folded across lines"),
        (b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n\nbody\n", "Gr\u00fc\u00dfe"),
        (b"Subject: =?utf-8?q?evil=0D=0ABcc=3A_x?=\n\n", "evil??Bcc: x"),
        (b"From: a@b\n\nSubject: in the body\n", ""),
        (b"Subject: " + b"x" * 500 + b"\n\n", "x" * 197 + "..."),
        (b"Subject: \xff\xfe8bit\n\n", "\ufffd\ufffd8bit"),
        (b"", ""),
    ],
)
def test_subject_of(message: bytes, expected: str) -> None:
    assert subject_of(message) == expected
