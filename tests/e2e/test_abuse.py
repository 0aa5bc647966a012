"""Abusive clients against the real daemon (issue #12): trickling and slow-loris clients
(bounded by `[server] timeout_s`, `data_timeout_s`, `session_timeout_s`), a thousand idle
connections (`max_connections_per_ip`, `max_connections`), command floods, and AUTH brute
force from parallel sessions (docs/auth-tls.md). In every case the limit holds, the abuser
gets a reply that says so, nothing of its unfinished mail is queued, and a well-behaved
client from another address is still served."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.daemon_harness import Client, Daemon, body, codes, start_daemon
from tests.e2e.tls_support import account, plain

USER, PASSWORD = "bob@example.com", "a long and right passphrase"

LIMITS = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
max_connections = 60
max_connections_per_ip = 10
shutdown_grace_s = 2

[delivery]
method = "maildir"
spool = "{tmp}/spool"

[auth]
enabled = true
require_tls = false
failure_delay_s = 0.5
max_failures_per_ip = 3
"""

DEADLINES = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
timeout_s = 2
data_timeout_s = 2.5
session_timeout_s = 4
max_connections_per_ip = 5
shutdown_grace_s = 2

[delivery]
method = "maildir"
spool = "{tmp}/spool"
"""
CRLF = b"\r\n"
TIMEOUT = b"451 timeout (#4.4.2)\r\n"
SESSION_OVER = b"421 mx.test session time limit reached, closing connection (#4.4.2)\r\n"


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("abuse-limits")
    d = start_daemon(tmp, LIMITS)
    res = account(f"sqlite+aiosqlite:///{tmp}/mailguard.db", "passwd", USER,
                  stdin=PASSWORD + "\n")
    assert res.returncode == 0, res.stderr
    yield d
    assert d.stop() == 0


@pytest.fixture(scope="module")
def deadlines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("abuse-deadlines"), DEADLINES)
    yield d
    assert d.stop() == 0


def served(d: Daemon, source: str, user: str) -> list[int]:
    """A whole well-behaved transaction from `source`; its reply codes."""
    c = Client(d.host, d.port, source=source)
    try:
        assert c.reply().startswith(b"220 ")
        return codes(c.transaction("a@example.org", [f"{user}@example.com"], body(user)))
    finally:
        c.close()


def wait_served(d: Daemon, source: str, user: str, within_s: float = 5.0) -> None:
    """The daemon notices closed connections asynchronously: poll until `source` is
    greeted with 220 again, then run a transaction."""
    deadline = time.monotonic() + within_s
    while True:
        c = Client(d.host, d.port, source=source)
        try:
            greeting = c.reply()
        finally:
            c.close()
        if greeting.startswith(b"220 "):
            break
        assert time.monotonic() < deadline, f"{source} still refused: {greeting!r}"
        time.sleep(0.1)
    assert served(d, source, user) == [250, 250, 354, 250]


def wait_free(d: Daemon, source: str, n: int, within_s: float = 5.0) -> None:
    """Until `n` sessions from `source` are all greeted: the daemon has let go of every
    connection an earlier test closed (it notices closes asynchronously)."""
    deadline = time.monotonic() + within_s
    while True:
        socks = open_many(d, [source] * n)
        try:
            greetings = [first_reply(s) for s in socks]
        finally:
            for s in socks:
                s.close()
        if all(g.startswith(b"220 ") for g in greetings):
            return
        assert time.monotonic() < deadline, f"{source}: {set(greetings)}"
        time.sleep(0.1)


def open_many(d: Daemon, sources: list[str]) -> list[socket.socket]:
    socks: list[socket.socket] = []
    try:
        for src in sources:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.settimeout(15)
            s.bind((src, 0))
            s.connect((d.host, d.port))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def first_reply(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


# --- idle connections --------------------------------------------------------------------

def test_a_thousand_idle_connections_from_one_address(limits: Daemon) -> None:
    socks = open_many(limits, ["127.0.3.1"] * 1000)
    try:
        greetings = [first_reply(s) for s in socks]
        accepted = [g for g in greetings if g == b"220 mx.test ESMTP\r\n"]
        refused = [g for g in greetings if g.startswith(b"421 ")]
        assert (len(accepted), len(refused)) == (10, 990), {g[:40] for g in greetings}
        assert b"421 mx.test too many connections from your address" in refused[0] or \
            refused[0].startswith(b"421 mx.test"), refused[0]
        # someone else is served meanwhile
        assert served(limits, "127.0.3.2", "other1") == [250, 250, 354, 250]
    finally:
        for s in socks:
            s.close()
    wait_served(limits, "127.0.3.1", "again1")
    wait_free(limits, "127.0.3.1", 10)
    assert len(limits.spooled("example.com", "other1")) == 1


def test_total_connection_limit_holds_and_recovers(limits: Daemon) -> None:
    sources = [f"127.0.4.{i}" for i in range(1, 31) for _ in range(3)]  # 90 from 30 IPs
    socks = open_many(limits, sources)
    try:
        greetings = [first_reply(s) for s in socks]
        accepted = sum(g.startswith(b"220 ") for g in greetings)
        refused = sum(g.startswith(b"421 ") for g in greetings)
        assert (accepted, refused) == (60, 30), {g[:40] for g in greetings}
        late = Client(limits.host, limits.port, source="127.0.4.99")
        try:
            assert late.reply().startswith(b"421 ")  # full is full, for everyone
        finally:
            late.close()
    finally:
        for s in socks:
            s.close()
    wait_served(limits, "127.0.4.99", "after-total")
    wait_free(limits, "127.0.4.98", 10)


# --- floods ------------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "reply"), [(b"NOOP", b"250 ok\r\n"),
                                              (b"XYZZY", b"502 unimplemented (#5.5.1)\r\n")])
def test_command_flood_is_answered_in_order_and_others_are_served(
        limits: Daemon, line: bytes, reply: bytes) -> None:
    n = 20_000
    c = Client(limits.host, limits.port, source="127.0.5.1", timeout_s=30)
    try:
        assert c.reply().startswith(b"220 ")
        sender = threading.Thread(target=c.send, args=((line + b"\r\n") * n,), daemon=True)
        sender.start()
        started = time.monotonic()
        other = served(limits, "127.0.5.2", f"flooded-{line.decode().lower()}")
        other_s = time.monotonic() - started
        got = b""
        while got.count(b"\r\n") < n:
            chunk = c.sock.recv(1 << 20)
            assert chunk, f"closed after {got.count(CRLF)} replies"
            got += chunk
        sender.join(10)
        assert got == reply * n
        assert c.cmd("QUIT") == b"221 mx.test\r\n"
    finally:
        c.close()
    assert other == [250, 250, 354, 250]
    assert other_s < 5, f"a flood slowed another client to {other_s:.1f}s"


def test_recipient_flood_stops_at_max_rcpts(limits: Daemon) -> None:
    c = Client(limits.host, limits.port, source="127.0.5.3", timeout_s=30)
    try:
        assert c.reply().startswith(b"220 ")
        assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
        c.send(b"".join(f"RCPT TO:<r{i}@example.com>\r\n".encode() for i in range(1200)))
        replies = [c.reply() for _ in range(1200)]
        assert replies[:1000] == [b"250 ok\r\n"] * 1000
        assert set(replies[1000:]) == {b"452 4.5.3 too many recipients\r\n"}
        assert c.cmd("RSET") == b"250 flushed\r\n"
    finally:
        c.close()


# --- AUTH brute force --------------------------------------------------------------------

def auth_once(d: Daemon, source: str, password: str) -> bytes:
    c = Client(d.host, d.port, source=source, timeout_s=20)
    try:
        assert c.reply().startswith(b"220 ")
        assert c.cmd("EHLO brute.test").startswith(b"250")
        return c.cmd(f"AUTH PLAIN {plain(USER, password)}")
    finally:
        c.close()


def test_parallel_auth_brute_force_is_capped(limits: Daemon) -> None:
    """10 sessions (the per-address limit) from one address fire a wrong password at
    once: at most
    max_failures_per_ip (3) reach the backend and get 535; the others, and then even
    the right password from that address, get 421; another address logs in."""
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: auth_once(limits, "127.0.6.1", f"guess{i}"),
                                range(10)))
    failed = [r for r in results if r == b"535 5.7.8 authentication failed\r\n"]
    locked = [r for r in results if r == b"421 4.7.0 too many failed logins\r\n"]
    assert len(failed) + len(locked) == 10, set(results)
    assert 1 <= len(failed) <= 3, set(results)
    assert auth_once(limits, "127.0.6.1", PASSWORD) == b"421 4.7.0 too many failed logins\r\n"
    assert auth_once(limits, "127.0.6.2", PASSWORD) == b"235 2.7.0 authentication successful\r\n"
    log = limits.read_log(0.2)
    verified = [x for x in log.splitlines()
                if "event=auth" in x and "client=127.0.6.1" in x and "result=fail" in x]
    assert len(verified) <= 3, verified


# --- trickling and slow-loris clients ----------------------------------------------------

def test_trickled_data_is_cut_at_data_timeout(deadlines: Daemon) -> None:
    """A body line every 0.5 s keeps the 2 s idle timer happy; the 2.5 s DATA deadline
    ends it: 451, closed, nothing queued."""
    c = Client(deadlines.host, deadlines.port, source="127.0.7.1")
    try:
        assert c.reply().startswith(b"220 ")
        assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
        assert c.cmd("RCPT TO:<trickle@example.com>") == b"250 ok\r\n"
        assert c.cmd("DATA") == b"354 go ahead\r\n"
        started = time.monotonic()
        reply = b""
        for i in range(20):
            try:
                c.send(f"line {i}\r\n".encode())
            except OSError:
                break
            c.sock.settimeout(0.5)
            try:
                reply = c.reply()
            except TimeoutError:
                continue
            break
        elapsed = time.monotonic() - started
    finally:
        c.close()
    assert reply == TIMEOUT
    assert 2.3 <= elapsed <= 5, elapsed
    assert deadlines.spooled("example.com", "trickle") == []


def test_session_deadline_ends_a_chatty_idler(deadlines: Daemon) -> None:
    c = Client(deadlines.host, deadlines.port, source="127.0.7.2")
    try:
        started = time.monotonic()
        assert c.reply().startswith(b"220 ")
        reply = b""
        while time.monotonic() - started < 8:
            reply = c.cmd("NOOP")
            if reply != b"250 ok\r\n":
                break
            time.sleep(0.4)
        elapsed = time.monotonic() - started
        assert reply == SESSION_OVER
        assert c.closed_by_peer()
    finally:
        c.close()
    assert 3.8 <= elapsed <= 6.5, elapsed


def test_slow_loris_is_bounded_and_others_are_served(deadlines: Daemon) -> None:
    """Five connections (the per-address limit) each trickle one byte of a command line
    every 0.4 s, never ending it: a sixth is refused, another address is served, and the
    daemon closes all five by the session deadline; then the address is welcome again."""
    socks = open_many(deadlines, ["127.0.7.3"] * 6)
    try:
        greetings = [first_reply(s) for s in socks]
        assert sum(g.startswith(b"220 ") for g in greetings) == 5
        assert sum(g.startswith(b"421 ") for g in greetings) == 1
        loris = [s for s, g in zip(socks, greetings, strict=True) if g.startswith(b"220 ")]
        assert served(deadlines, "127.0.7.4", "not-loris") == [250, 250, 354, 250]
        started = time.monotonic()
        endings: dict[int, bytes] = {}
        while len(endings) < len(loris) and time.monotonic() - started < 8:
            for i, s in enumerate(loris):
                if i in endings:
                    continue
                try:
                    s.send(b"N")
                    s.settimeout(0.01)
                    data = s.recv(4096)
                    endings[i] = data or b"(closed)"
                except TimeoutError:
                    pass
                except OSError:
                    endings[i] = b"(reset)"
            time.sleep(0.4)
        elapsed = time.monotonic() - started
    finally:
        for s in socks:
            s.close()
    assert len(endings) == 5, f"{5 - len(endings)} slow-loris connections still open"
    assert elapsed <= 6, elapsed
    assert set(endings.values()) <= {TIMEOUT, SESSION_OVER}, endings
    wait_served(deadlines, "127.0.7.3", "loris-again")
