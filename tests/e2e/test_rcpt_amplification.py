"""Issue 12, recipient amplification: a repeated RCPT is answered `250 ok` as qmail-smtpd
would but the message reaches that recipient once (case-insensitive domain, exact local
part), and past `[server] max_rcpts` RCPT gets `452 4.5.3 too many recipients` — on the
daemon's own listener, in a drop-in session (`mailguard smtpd` under tcpserver) and on the
QMAILQUEUE path (`mailguard queue`: deduplicated; too many from qmail-smtpd → permanent)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import RECORDER, Client, Daemon, start_daemon
from tests.e2e.tcpserver_harness import (
    LEAN_QUEUE,
    LEAN_SMTPD,
    build_rules,
    have_ucspi,
    lean_env,
    recorded,
    run_queue_program,
    start_tcpserver,
)

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
shutdown_grace_s = 5
max_rcpts = 3

[delivery]
method = "qmail-queue"
qmail_queue = "{tmp}/inner-qq"

[control]
socket = "{tmp}/control.sock"
"""
MESSAGE = b"From: a@example.org\r\nSubject: many\r\n\r\nhello\r\n"
TOO_MANY = b"452 4.5.3 too many recipients\r\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("rcpts")
    inner = tmp / "inner-qq"  # the recording qmail-queue, told where to record (qq.env)
    inner.write_text(f'#!/bin/sh\n. "{tmp}/qq.env"\nexec "{sys.executable}" "{RECORDER}"\n')
    inner.chmod(0o755)
    d = start_daemon(tmp, CONFIG)
    yield d
    assert d.stop() == 0


@pytest.fixture
def rec(daemon: Daemon, tmp_path: Path) -> Path:
    d = tmp_path / "rec"
    d.mkdir()
    (daemon.tmp / "qq.env").write_text(f"export RECORD_DIR='{d}'\n")
    return d


def session(c: Client) -> list[bytes]:
    """Repeated recipients (the same one 50 times, its domain in other cases), then more
    distinct ones than the limit allows."""
    assert c.reply().startswith(b"220 ")
    out = [c.cmd("HELO client.test"), c.cmd("MAIL FROM:<a@example.org>")]
    out += [c.cmd("RCPT TO:<b@example.com>") for _ in range(50)]
    out += [c.cmd("RCPT TO:<b@EXAMPLE.com>"), c.cmd("RCPT TO:<c@Example.Com>")]
    out += [c.cmd("RCPT TO:<C@example.com>")]  # another local part: another recipient
    out += [c.cmd("RCPT TO:<d@example.com>"), c.cmd("RCPT TO:<c@example.com>")]
    out.append(c.cmd("DATA"))
    c.send(MESSAGE + b".\r\n")
    out.append(c.reply())
    return out


def test_daemon_listener(daemon: Daemon, rec: Path) -> None:
    c = Client(daemon.host, daemon.port)
    try:
        replies = session(c)
    finally:
        c.close()
    assert replies[2:55] == [b"250 ok\r\n"] * 53  # 50 + 3: qmail's answer to each
    assert replies[55] == TOO_MANY  # d: a fourth distinct recipient
    assert replies[56] == b"250 ok\r\n"  # c again: a duplicate, not a new one
    assert replies[57] == b"354 go ahead\r\n"
    assert replies[58].startswith(b"250 ok"), replies[58]
    [(_msg, envelope)] = recorded(rec)
    assert envelope == b"Fa@example.org\0Tb@example.com\0Tc@Example.Com\0TC@example.com\0\0"
    line = daemon.wait_log("rcpts=b@example.com")
    assert 'refused="d@example.com=452"' in line


@pytest.mark.skipif(not have_ucspi(), reason="ucspi-tcp is not installed")
def test_dropin_session(daemon: Daemon, rec: Path, tmp_path: Path) -> None:
    env = lean_env(daemon.control, QMAILQUEUE=str(RECORDER), RECORD_DIR=str(rec),
                   MAILGUARD_CONFIG=str(daemon.tmp / "mailguard.toml"))
    server = start_tcpserver(tmp_path, LEAN_SMTPD, env, build_rules(tmp_path, [":allow"]))
    try:
        c = Client("127.0.0.1", server.port)
        try:
            replies = session(c)
        finally:
            c.close()
    finally:
        server.stop()
    assert replies[2:55] == [b"250 ok\r\n"] * 53
    assert replies[55:58] == [TOO_MANY, b"250 ok\r\n", b"354 go ahead\r\n"]
    assert replies[58].startswith(b"250 ok"), replies[58]
    [(_msg, envelope)] = recorded(rec)
    assert envelope == b"Fa@example.org\0Tb@example.com\0Tc@Example.Com\0TC@example.com\0\0"


def queue(daemon: Daemon, envelope: bytes, **env: str) -> tuple[int, bytes]:
    run = run_queue_program(LEAN_QUEUE, b"Subject: q\n\nhello\n", envelope,
                            lean_env(daemon.control, **env))
    return run.exit_code, run.custom


def test_queue_path_deduplicates(daemon: Daemon, rec: Path) -> None:
    dupes = b"Fa@example.org\0" + b"Tb@example.com\0" * 200 + b"Tb@EXAMPLE.COM\0Tc@x.test\0\0"
    assert queue(daemon, dupes, TCPREMOTEIP="192.0.2.7") == (0, b"")
    [(_msg, envelope)] = recorded(rec)
    assert envelope == b"Fa@example.org\0Tb@example.com\0Tc@x.test\0\0"


def test_queue_path_too_many_from_smtp_is_permanent(daemon: Daemon, rec: Path) -> None:
    many = b"Fa@example.org\0" + b"".join(b"Tu%d@example.com\0" % i for i in range(4)) + b"\0"
    assert queue(daemon, many, TCPREMOTEIP="192.0.2.7") == (82, b"D5.5.3 too many recipients")
    assert recorded(rec) == []
    # local programs (list managers send one copy to every subscriber) are not limited
    assert queue(daemon, many) == (0, b"")
    assert [env for _msg, env in recorded(rec)] == [many]

