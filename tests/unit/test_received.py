"""The qmail-smtpd Received header, exact bytes at frozen times."""

from __future__ import annotations

import calendar

import pytest

from mailguard.clock import FrozenClock
from mailguard.qmail.received import date822fmt, received_header, safeput

WHEN = 1_795_711_998.0  # 26 Nov 2026 16:53:18 GMT


def header(
    *,
    remote_ip: str = "127.0.0.1",
    remote_host: str | None = None,
    remote_info: str | None = None,
    helo: str | None = None,
    local_host: str = "localhost",
    protocol: str = "SMTP",
    when: float = WHEN,
) -> bytes:
    return received_header(
        remote_ip=remote_ip,
        remote_host=remote_host,
        remote_info=remote_info,
        helo=helo,
        local_host=local_host,
        protocol=protocol,
        when=when,
    )


def test_the_reference_session() -> None:
    # Seen on notqmail 1.09 (shared reference): tcpserver -R -H, HELO client.test.
    clock = FrozenClock(start=WHEN)
    assert header(helo="client.test", when=clock.now()) == (
        b"Received: from unknown (HELO client.test) (127.0.0.1)\n"
        b"  by localhost with SMTP; 26 Nov 2026 16:53:18 -0000\n"
    )


def test_djbs_example_from_received_c() -> None:
    when = calendar.timegm((1995, 9, 26, 4, 46, 54, 0, 0, 0))
    got = header(
        remote_ip="192.48.96.5",
        remote_host="relay1.uu.net",
        remote_info="7",
        helo="uunet.uu.net",
        local_host="silverton.berkeley.edu",
        when=when,
    )
    assert got == (
        b"Received: from relay1.uu.net (HELO uunet.uu.net) (7@192.48.96.5)\n"
        b"  by silverton.berkeley.edu with SMTP; 26 Sep 1995 04:46:54 -0000\n"
    )


@pytest.mark.parametrize(
    ("remote_host", "helo", "from_part"),
    [
        (None, None, b"from unknown (127.0.0.1)"),  # no HELO at all
        ("mx.client.test", None, b"from mx.client.test (127.0.0.1)"),
        ("mx.client.test", "mx.client.test", b"from mx.client.test (127.0.0.1)"),
        ("mx.client.test", "MX.Client.TEST", b"from mx.client.test (127.0.0.1)"),  # case_diffs
        ("mx.client.test", "other.test", b"from mx.client.test (HELO other.test) (127.0.0.1)"),
        (None, "unknown", b"from unknown (127.0.0.1)"),  # compared with "unknown"
        (None, "", b"from unknown (HELO ) (127.0.0.1)"),  # empty HELO argument
        (None, "[192.0.2.1]", b"from unknown (HELO [192.0.2.1]) (127.0.0.1)"),
    ],
)
def test_helo_part(remote_host: str | None, helo: str | None, from_part: bytes) -> None:
    got = header(remote_host=remote_host, helo=helo)
    assert got == b"Received: " + from_part + b"\n  by localhost with SMTP; " + (
        b"26 Nov 2026 16:53:18 -0000\n"
    )


def test_remote_info() -> None:
    got = header(remote_host="h.test", remote_info="alice", remote_ip="192.0.2.7")
    assert got.startswith(b"Received: from h.test (alice@192.0.2.7)\n")


def test_ipv6_printed_as_is() -> None:
    got = header(remote_ip="2001:db8::1", local_host="2001:db8::25")
    assert got == (
        b"Received: from unknown (2001:db8::1)\n"
        b"  by 2001:db8::25 with SMTP; 26 Nov 2026 16:53:18 -0000\n"
    )


def test_unsafe_characters_become_question_marks() -> None:
    got = header(
        remote_host="h\u00e9.test",
        helo="evil\r\nX-Injected: yes <x>",
        remote_info="a b",
        local_host="l\tl",
    )
    assert got == (
        b"Received: from h??.test (HELO evil??X-Injected:?yes??x?) (a?b@127.0.0.1)\n"
        b"  by l?l with SMTP; 26 Nov 2026 16:53:18 -0000\n"
    )
    assert got.count(b"\n") == 2


def test_safeput_keeps_exactly_qmails_safe_set() -> None:
    safe = "abcxyzABCXYZ0189.@%+/=:-[]"
    assert safeput(safe) == safe.encode()
    unsafe = "_ ~!#$&'()*,;<>?\\^`{|}\"\0\x7f"
    assert safeput(unsafe) == b"?" * len(unsafe)


@pytest.mark.parametrize("protocol", ["ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA", "UTF8SMTPS"])
def test_protocol(protocol: str) -> None:
    assert f" with {protocol}; ".encode() in header(protocol=protocol)


@pytest.mark.parametrize("protocol", ["", "SMTP\n", "E SMTP", "SMTP;x"])
def test_bad_protocol_is_refused(protocol: str) -> None:
    with pytest.raises(ValueError, match="bad protocol"):
        header(protocol=protocol)


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (calendar.timegm((2027, 1, 1, 0, 0, 0, 0, 0, 0)), b"1 Jan 2027 00:00:00 -0000"),
        (calendar.timegm((2026, 2, 9, 3, 4, 5, 0, 0, 0)) + 0.999, b"9 Feb 2026 03:04:05 -0000"),
        (0, b"1 Jan 1970 00:00:00 -0000"),
    ],
)
def test_date822fmt(when: float, text: bytes) -> None:
    # Day not zero-padded, fractions dropped (qmail's now() is whole seconds), always GMT.
    assert date822fmt(when) == text
