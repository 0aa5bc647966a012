"""Issue 12, trickling clients: the idle timeout restarts with every line, so a client
sending one line every 0.2 s would hold a session (and a message buffer) forever.
`[server] data_timeout_s` bounds DATA from the 354 to the final dot (`451 timeout
(#4.4.2)`, close, nothing queued) and `session_timeout_s` the whole connection (421,
close). Real daemon, real client trickling over a real socket."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.daemon_harness import Client, Daemon, start_daemon

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
shutdown_grace_s = 5
timeout_s = 30
data_timeout_s = 1.5
session_timeout_s = 4

[delivery]
method = "maildir"
spool = "{tmp}/spool"
"""
LINE_EVERY_S = 0.2


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("trickle"), CONFIG)
    yield d
    assert d.stop() == 0


def trickle(c: Client, line: bytes, *, for_s: float) -> tuple[list[bytes], float]:
    """Send `line` every LINE_EVERY_S until the server hangs up (or `for_s` passed): the
    replies received meanwhile, and when the server closed (seconds from the start)."""
    c.sock.settimeout(LINE_EVERY_S)
    started = time.monotonic()
    got = b""
    while time.monotonic() - started < for_s:
        try:
            c.send(line)
        except OSError:  # reset: the server is gone
            break
        try:
            chunk = c.sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
        time.sleep(LINE_EVERY_S)
    return got.splitlines(keepends=True), time.monotonic() - started


def test_trickled_data_is_cut_at_the_data_deadline(daemon: Daemon) -> None:
    c = Client(daemon.host, daemon.port)
    try:
        assert c.reply().startswith(b"220 ")
        assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
        assert c.cmd("RCPT TO:<slow@example.com>") == b"250 ok\r\n"
        assert c.cmd("DATA") == b"354 go ahead\r\n"
        replies, closed_after = trickle(c, b"Subject: one line at a time\r\n", for_s=8)
    finally:
        c.close()
    assert replies == [b"451 timeout (#4.4.2)\r\n"]
    assert 1.2 < closed_after < 3.5, closed_after  # 1.5 s, not the 30 s idle timeout
    assert daemon.spooled("example.com", "slow") == []
    log = daemon.wait_log("limit=data")
    assert "event=transaction" in log and "result=aborted" in log


def test_trickled_commands_are_cut_at_the_session_deadline(daemon: Daemon) -> None:
    c = Client(daemon.host, daemon.port)
    try:
        assert c.reply().startswith(b"220 ")
        started = time.monotonic()
        replies, closed_after = trickle(c, b"NOOP\r\n", for_s=10)
    finally:
        c.close()
    assert replies[:-1] == [b"250 ok\r\n"] * (len(replies) - 1)
    assert len(replies) > 10
    assert replies[-1] == b"421 mx.test session time limit reached, closing connection (#4.4.2)\r\n"
    assert 3.0 < time.monotonic() - started < 6.5, closed_after
    daemon.wait_log("limit=session")


def test_a_message_within_the_limits_is_accepted(daemon: Daemon) -> None:
    c = Client(daemon.host, daemon.port)
    try:
        assert c.reply().startswith(b"220 ")
        replies = c.transaction("a@example.org", ["quick@example.com"],
                                b"Subject: quick\r\n\r\nhello\r\n")
    finally:
        c.close()
    assert replies[-1].startswith(b"250 ok"), replies
    assert len(daemon.spooled("example.com", "quick")) == 1
