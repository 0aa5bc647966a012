"""SMTP AUTH decisions without sockets: response decoding, PLAIN parsing, the failure
counter, and the whole AUTH command against an in-memory credential table."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from mailguard.auth.limiter import FailureCounter
from mailguard.clock import FrozenClock
from mailguard.context import Session, Transaction
from mailguard.errors import TemporaryError
from mailguard.frontend import replies
from mailguard.frontend.smtpauth import (
    LOGIN_PASSWORD,
    LOGIN_USER,
    SmtpAuth,
    _Abort,
    decode_response,
    parse_plain,
)
from mailguard.metrics import Metrics
from mailguard.settings.auth import AuthConfig
from mailguard.verdict import Reply


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b64("alice"), "alice"),
        (f"  {b64('alice')}  ", "alice"),
        ("=", ""),
        (b64("jörg"), "jörg"),
        ("*", replies.AUTH_CANCELLED),
        ("not base64!", replies.AUTH_UNDECODABLE),
        ("YWJ", replies.AUTH_UNDECODABLE),  # bad padding
        (base64.b64encode(b"\xff\xfe").decode(), replies.AUTH_UNDECODABLE),  # not UTF-8
        (None, replies.AUTH_UNDECODABLE),  # the line was too long
    ],
)
def test_decode_response(line: str | None, expected: str | Reply) -> None:
    if isinstance(expected, Reply):
        with pytest.raises(_Abort) as err:
            decode_response(line)
        assert err.value.reply == expected
    else:
        assert decode_response(line) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("\0alice\0pw", ("", "alice", "pw")),
        ("alice\0alice\0pw", ("alice", "alice", "pw")),
        ("\0alice\0pw\0x", None),
        ("alice\0pw", None),
        ("", None),
    ],
)
def test_parse_plain(message: str, expected: tuple[str, str, str] | None) -> None:
    if expected is None:
        with pytest.raises(_Abort):
            parse_plain(message)
    else:
        assert parse_plain(message) == expected


def test_failure_counter_window_and_bound() -> None:
    fc = FailureCounter(max_failures=3, window_s=600, max_ips=2)
    assert [fc.add("192.0.2.1", t) for t in (0, 10, 20)] == [1, 2, 3]
    assert fc.blocked("192.0.2.1", 20)
    assert fc.blocked("192.0.2.1", 599.9)
    assert fc.count("192.0.2.1", 600) == 2  # the first one left the window
    assert not fc.blocked("192.0.2.1", 600)
    assert fc.count("192.0.2.1", 621) == 0 and len(fc) == 0  # forgotten when empty
    fc.add("192.0.2.1", 700)
    fc.add("192.0.2.2", 701)
    fc.add("192.0.2.3", 702)  # a third IP: the least recently failing one is dropped
    assert len(fc) == 2 and fc.count("192.0.2.1", 703) == 0
    assert fc.count("192.0.2.3", 703) == 1


def test_attempts_in_flight_count_against_the_limit() -> None:
    fc = FailureCounter(max_failures=3, window_s=600)
    assert [fc.begin("192.0.2.1", 0) for _ in range(4)] == [True, True, True, False]
    assert fc.blocked("192.0.2.1", 0) and not fc.blocked("192.0.2.2", 0)
    assert fc.end("192.0.2.1", 1, failed=False) == 0  # a success frees its place
    assert fc.begin("192.0.2.1", 1)
    assert [fc.end("192.0.2.1", 2, failed=True) for _ in range(3)] == [1, 2, 3]
    assert not fc.begin("192.0.2.1", 2)  # now three failures


class TableAuth:
    """Credentials in a dict; the user "down" behaves like an unreachable backend."""

    name = "table"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def verify(self, username: str, password: str, *, client_ip: str) -> str | None:
        self.calls.append((username, password, client_ip))
        if username == "down":
            raise TemporaryError("backend down")
        return username if (username, password) == ("alice", "s3cret") else None


def make(**cfg: object) -> tuple[SmtpAuth, TableAuth, FrozenClock, Metrics]:
    config = AuthConfig(**{"enabled": True, **cfg})  # type: ignore[arg-type]
    backend, clock, metrics = TableAuth(), FrozenClock(), Metrics()
    return SmtpAuth(config, backend, clock, metrics), backend, clock, metrics


def session(ip: str = "192.0.2.9", *, tls: bool = True) -> Session:
    return Session(ipaddress.ip_address(ip), 4242, FrozenClock(), tls=tls, session_id="t")


def asker(*answers: str) -> tuple[list[str], object]:
    """An `ask` that records the challenges and returns the scripted answers."""
    asked: list[str] = []
    queue = list(answers)

    async def ask(challenge: str) -> str | None:
        asked.append(challenge)
        return queue.pop(0)

    return asked, ask


async def run(auth: SmtpAuth, s: Session, arg: str, *answers: str) -> tuple[Reply, bool,
                                                                          list[str]]:
    asked, ask = asker(*answers)
    step = await auth.command(s, arg, ask)  # type: ignore[arg-type]
    return step.reply, step.close, asked


async def test_plain_initial_response_and_continuation() -> None:
    auth, backend, _, metrics = make()
    s = session()
    assert await run(auth, s, f"PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}") == (
        replies.AUTH_OK, False, [])
    assert s.auth_user == "alice"
    assert backend.calls == [("alice", "s3cret", "192.0.2.9")]
    s2 = session()
    assert await run(auth, s2, "plain", b64("\0alice\0s3cret")) == (replies.AUTH_OK, False, [""])
    assert metrics.value("mailguard_auth_total", result="ok") == 2


async def test_login_exchange() -> None:
    auth, _, _, _ = make()
    s = session()
    reply, _, asked = await run(auth, s, "LOGIN", b64("alice"), b64("s3cret"))
    assert (reply, asked) == (replies.AUTH_OK, [LOGIN_USER, LOGIN_PASSWORD])
    s2 = session()  # the username as initial response
    reply, _, asked = await run(auth, s2, f"LOGIN {b64('alice')}", b64("s3cret"))
    assert (reply, asked, s2.auth_user) == (replies.AUTH_OK, [LOGIN_PASSWORD], "alice")


@pytest.mark.parametrize(
    ("cfg", "tls", "arg", "answers", "expected"),
    [
        ({}, False, "PLAIN", (), replies.AUTH_NEEDS_TLS),
        ({"require_tls": False}, False, f"PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}",
         (), replies.AUTH_OK),
        ({}, True, "", (), replies.AUTH_SYNTAX),
        ({}, True, "CRAM-MD5", (), replies.AUTH_MECHANISM),
        ({"mechanisms": ("PLAIN",)}, True, "LOGIN", (), replies.AUTH_MECHANISM),
        ({}, True, "PLAIN", ("*",), replies.AUTH_CANCELLED),
        ({}, True, "LOGIN", (b64("alice"), "*"), replies.AUTH_CANCELLED),
        ({}, True, "PLAIN %%%", (), replies.AUTH_UNDECODABLE),
        ({}, True, "PLAIN =", (), replies.AUTH_UNDECODABLE),
        ({}, True, f"PLAIN {b64('bob' + chr(0) + 'alice' + chr(0) + 's3cret')}", (),
         replies.AUTH_FAILED),  # acting for another identity is not allowed
        ({}, True, f"PLAIN {b64(chr(0) + 'down' + chr(0) + 'pw')}", (),
         replies.AUTH_TEMPORARY),
        ({"enabled": False}, True, "PLAIN", (), replies.UNIMPLEMENTED),
    ],
)
async def test_auth_replies(cfg: dict[str, object], tls: bool, arg: str,
                            answers: tuple[str, ...], expected: Reply) -> None:
    auth, _, _, _ = make(**cfg)
    reply, close, _ = await run(auth, session(tls=tls), arg, *answers)
    assert (reply, close) == (expected, False)


async def test_twice_and_during_a_transaction() -> None:
    auth, _, _, _ = make()
    s = session()
    s.auth_user = "alice"
    assert (await run(auth, s, "PLAIN"))[0] == replies.AUTH_ALREADY
    s2 = session()
    s2.transaction = Transaction("a@example.org")
    assert (await run(auth, s2, "PLAIN"))[0] == replies.AUTH_IN_TRANSACTION


async def test_failures_are_delayed_counted_and_lock_the_ip_out() -> None:
    auth, backend, clock, metrics = make(max_failures_per_ip=3, failure_window_s=600,
                                         failure_delay_s=2)
    wrong = f"PLAIN {b64(chr(0) + 'alice' + chr(0) + 'guess')}"
    right = f"PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}"
    assert (await run(auth, session(), wrong))[:2] == (replies.AUTH_FAILED, False)
    assert (await run(auth, session(), wrong))[:2] == (replies.AUTH_FAILED, False)
    assert (await run(auth, session(), wrong))[:2] == (replies.AUTH_TOO_MANY, True)
    assert clock.sleeps == [2, 2, 2]
    calls = len(backend.calls)
    # locked: even the right password is not checked, from any session of that IP
    assert (await run(auth, session(), right))[:2] == (replies.AUTH_TOO_MANY, True)
    assert len(backend.calls) == calls and clock.sleeps == [2, 2, 2]
    # another address is not affected
    assert (await run(auth, session("192.0.2.10"), right))[0] == replies.AUTH_OK
    clock.advance(600 - 6 + 0.1)  # the first failure (at t=0) leaves the window
    assert (await run(auth, session(), right))[0] == replies.AUTH_OK
    assert metrics.value("mailguard_auth_total", result="fail") == 2
    assert metrics.value("mailguard_auth_total", result="locked") == 2


def test_ehlo_keywords() -> None:
    auth, _, _, _ = make(mechanisms=("login", "PLAIN"))
    assert auth.ehlo_keywords(session(tls=True)) == ["AUTH LOGIN PLAIN"]
    assert auth.ehlo_keywords(session(tls=False)) == []
    open_auth, _, _, _ = make(require_tls=False)
    assert open_auth.ehlo_keywords(session(tls=False)) == ["AUTH PLAIN LOGIN"]
