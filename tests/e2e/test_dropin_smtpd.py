"""`mailguard smtpd` under the real tcpserver, with tcprules giving each 127.x source
address qmail's environment: exact replies as qmail-smtpd's, mail through QMAILQUEUE
(the recording qmail-queue), and 421 with nothing queued when the daemon is down."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import RECORDER, Client, Daemon, start_daemon
from tests.e2e.tcpserver_harness import (
    LEAN_SMTPD,
    SMTPD_SHIM,
    Tcpserver,
    build_rules,
    have_ucspi,
    lean_env,
    recorded,
    start_tcpserver,
)

pytestmark = pytest.mark.skipif(not have_ucspi(), reason="ucspi-tcp is not installed")

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{tmp}/spool"

[control]
socket = "{tmp}/control.sock"
"""

RULES = [
    '127.0.0.2:allow,RELAYCLIENT=""',
    '127.0.0.3:allow,RBLSMTPD="-blocked here"',
    '127.0.0.4:allow,DATABYTES="100"',
    '127.0.0.5:allow,TCPREMOTEHOST="client.example"',
    '127.0.0.6:allow,RELAYCLIENT="-x"',
    '127.0.0.10:allow,FAKE_QQ_EXIT="31"',
    '127.0.0.11:allow,FAKE_QQ_EXIT="71"',
    '127.0.0.12:allow,FAKE_QQ_EXIT="82",FAKE_QQ_TEXT="Dno thanks"',
    '127.0.0.13:allow,FAKE_QQ_EXIT="82",FAKE_QQ_TEXT="Ztry again later"',
    '127.0.0.14:allow,FAKE_QQ_EXIT="11"',
    '127.0.0.15:allow,FAKE_QQ_EXIT="51"',
    '127.0.0.16:allow,FAKE_QQ_EXIT="54"',
    '127.0.0.17:allow,QMAILQUEUE="/bin/sh"',
    ":allow",
]
NOT_RCPTHOSTS = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
QUEUED = re.compile(rb"250 ok (\d+) qp (\d+)\r\n")
MESSAGE = b"From: a@example.org\r\nSubject: drop-in\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("dropin"), CONFIG)
    yield d
    assert d.stop() == 0


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_rules(tmp_path_factory.mktemp("rules"), RULES)


@pytest.fixture
def record_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rec"
    d.mkdir()
    return d


@pytest.fixture
def tcpserver(daemon: Daemon, rules: Path, record_dir: Path,
              tmp_path: Path) -> Iterator[Callable[..., Tcpserver]]:
    """tcpserver(program=LEAN_SMTPD, control=daemon's socket) in front of the daemon, with
    QMAILQUEUE = the recording qmail-queue; stopped at the end."""
    started: list[Tcpserver] = []

    def make(program: list[str] = LEAN_SMTPD, control: Path | None = None) -> Tcpserver:
        env = lean_env(control or daemon.control, QMAILQUEUE=str(RECORDER),
                       RECORD_DIR=str(record_dir),
                       MAILGUARD_CONFIG=str(daemon.tmp / "mailguard.toml"))
        server = start_tcpserver(tmp_path, program, env, rules)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def client() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(server: Tcpserver, source: str = "127.0.0.1") -> Client:
        c = Client("127.0.0.1", server.port, source=source)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def test_ordinary_session_is_qmails(tcpserver: Callable[..., Tcpserver],
                                    client: Callable[..., Client], record_dir: Path) -> None:
    c = client(tcpserver())
    assert c.reply() == b"220 mx.test ESMTP\r\n"
    assert c.cmd("HELO client.test") == b"250 mx.test\r\n"
    # qmail-smtpd's EHLO and HELP, byte for byte (notqmail's words: no qmail-smtpd binary
    # next to a control dir here); STARTTLS and AUTH are qmail's 502
    assert c.cmd("EHLO client.test") == b"250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
    assert c.cmd("HELP") == b"214 notqmail home page: https://notqmail.org\r\n"
    assert c.cmd("STARTTLS") == b"502 unimplemented (#5.5.1)\r\n"
    assert c.cmd("AUTH PLAIN") == b"502 unimplemented (#5.5.1)\r\n"
    assert c.cmd("RCPT TO:<b@example.com>") == b"503 MAIL first (#5.5.1)\r\n"
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert c.cmd("DATA") == b"503 RCPT first (#5.5.1)\r\n"
    assert c.cmd("RCPT TO:<b@example.com>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<dave>") == b"250 ok\r\n"  # no domain: qmail-send qualifies it
    assert c.cmd("RCPT TO:<out@foreign.test>") == NOT_RCPTHOSTS
    assert c.cmd("NOOP") == b"250 ok\r\n"
    assert c.cmd("VRFY b") == b"252 send some mail, i'll try my best\r\n"
    assert c.cmd("EXPN b") == b"502 unimplemented (#5.5.1)\r\n"
    assert c.cmd("DATA") == b"354 go ahead\r\n"
    c.send(MESSAGE + b"..dot\r\n.\r\n")
    done = c.reply()
    m = QUEUED.fullmatch(done)
    assert m, done
    assert c.cmd("RSET") == b"250 flushed\r\n"
    assert c.cmd("QUIT") == b"221 mx.test\r\n"
    assert c.closed_by_peer()
    [(message, envelope)] = recorded(record_dir)
    assert envelope == b"Fa@example.org\0Tb@example.com\0Tdave\0\0"  # as qmail-smtpd passes it
    assert message.startswith(  # `with SMTP` after EHLO too, as qmail-smtpd writes it
        b"Received: from unknown (HELO client.test) (127.0.0.1)\n  by mx.test with SMTP; ")
    assert message.endswith(b"\nFrom: a@example.org\nSubject: drop-in\n\nhello\n.dot\n")
    # qp is the pid of the program QMAILQUEUE named, as with qmail-smtpd
    assert any(p.name.endswith(f".{m.group(2).decode()}.env") for p in record_dir.iterdir())


def test_relayclient_from_tcprules(tcpserver: Callable[..., Tcpserver],
                                   client: Callable[..., Client], record_dir: Path) -> None:
    server = tcpserver()
    stranger = client(server, "127.0.0.7")
    stranger.reply()
    assert stranger.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert stranger.cmd("RCPT TO:<out@foreign.test>") == NOT_RCPTHOSTS
    relay = client(server, "127.0.0.2")
    assert relay.reply() == b"220 mx.test ESMTP\r\n"
    replies = relay.transaction("a@example.org", ["out@foreign.test"], MESSAGE)
    assert replies[:3] == [b"250 ok\r\n", b"250 ok\r\n", b"354 go ahead\r\n"]
    assert QUEUED.fullmatch(replies[3])
    suffixed = client(server, "127.0.0.6")  # RELAYCLIENT="-x": appended, as qmail does
    suffixed.reply()
    replies = suffixed.transaction("a@example.org", ["out@foreign.test", "b@example.com"],
                                   MESSAGE)
    assert QUEUED.fullmatch(replies[-1])
    envelopes = [env for _msg, env in recorded(record_dir)]
    assert envelopes == [b"Fa@example.org\0Tout@foreign.test\0\0",
                         b"Fa@example.org\0Tout@foreign.test-x\0Tb@example.com-x\0\0"]


def test_rblsmtpd_from_tcprules_reaches_the_checks(
        tcpserver: Callable[..., Tcpserver], client: Callable[..., Client],
        record_dir: Path) -> None:
    c = client(tcpserver(), "127.0.0.3")
    assert c.reply() == b"220 mx.test ESMTP\r\n"
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<b@example.com>") == b"553 blocked here\r\n"
    assert c.cmd("RCPT TO:<postmaster@example.com>") == b"250 ok\r\n"


def test_databytes_and_received_host_from_the_environment(
        tcpserver: Callable[..., Tcpserver], client: Callable[..., Client],
        record_dir: Path) -> None:
    server = tcpserver()
    small = client(server, "127.0.0.4")  # DATABYTES="100"
    small.reply()
    assert b"SIZE" not in small.cmd("EHLO x")  # qmail's EHLO: no SIZE (extensions unset)
    big = MESSAGE + b"x" * 200 + b"\r\n"
    replies = small.transaction("a@example.org", ["b@example.com"], big)
    assert replies[-1] == b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
    replies = small.transaction("a@example.org", ["b@example.com"], MESSAGE)
    assert QUEUED.fullmatch(replies[-1])  # the session goes on
    named = client(server, "127.0.0.5")  # TCPREMOTEHOST="client.example"
    named.reply()
    named.cmd("HELO client.example")  # equal to the remote host: qmail leaves HELO out
    assert QUEUED.fullmatch(named.transaction("a@example.org", ["b@example.com"], MESSAGE)[-1])
    messages = [msg for msg, _env in recorded(record_dir)]
    assert len(messages) == 2
    assert messages[1].startswith(
        b"Received: from client.example (127.0.0.5)\n  by mx.test with SMTP; ")


def test_bare_lf_and_pipelining(tcpserver: Callable[..., Tcpserver],
                                client: Callable[..., Client], record_dir: Path) -> None:
    server = tcpserver()
    c = client(server)
    c.reply()
    c.send(b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
           b"RCPT TO:<c@foreign.test>\r\nDATA\r\n")
    assert c.reply().startswith(b"250-mx.test\r\n")
    assert [c.reply() for _ in range(4)] == [b"250 ok\r\n", b"250 ok\r\n", NOT_RCPTHOSTS,
                                            b"354 go ahead\r\n"]
    c.send(MESSAGE + b".\r\nQUIT\r\n")
    assert QUEUED.fullmatch(c.reply())
    assert c.reply() == b"221 mx.test\r\n"
    lf = client(server)
    lf.reply()
    assert lf.transaction("a@example.org", ["b@example.com"], b"Subject: x\r\n\r\nbare\nlf\r\n")[
        -1] == b"451 See https://cr.yp.to/docs/smtplf.html.\r\n"
    assert lf.closed_by_peer()
    assert len(recorded(record_dir)) == 1  # only the pipelined message


@pytest.mark.parametrize(
    ("source", "reply"),
    [
        ("127.0.0.10", b"554 mail server permanently rejected message (#5.3.0)\r\n"),
        ("127.0.0.11", b"451 mail server temporarily rejected message (#4.3.0)\r\n"),
        ("127.0.0.12", b"554 no thanks\r\n"),
        ("127.0.0.13", b"451 try again later\r\n"),
        ("127.0.0.14", b"554 envelope address too long for qq (#5.1.3)\r\n"),
        ("127.0.0.15", b"451 qq out of memory (#4.3.0)\r\n"),
        ("127.0.0.16", b"451 qq read error (#4.3.0)\r\n"),
    ],
)
def test_each_qmail_queue_exit_code(tcpserver: Callable[..., Tcpserver],
                                    client: Callable[..., Client], source: str,
                                    reply: bytes) -> None:
    c = client(tcpserver(), source)
    c.reply()
    assert c.transaction("a@example.org", ["b@example.com"], MESSAGE)[-1] == reply
    assert c.cmd("QUIT") == b"221 mx.test\r\n"


def test_through_the_qmail_hooks_shim(tcpserver: Callable[..., Tcpserver],
                                      client: Callable[..., Client], record_dir: Path) -> None:
    c = client(tcpserver([str(SMTPD_SHIM)]), "127.0.0.2")
    assert c.reply() == b"220 mx.test ESMTP\r\n"
    assert QUEUED.fullmatch(c.transaction("a@example.org", ["o@foreign.test"], MESSAGE)[-1])
    assert c.cmd("QUIT") == b"221 mx.test\r\n"
    assert len(recorded(record_dir)) == 1


@pytest.mark.parametrize("program", [LEAN_SMTPD, [str(SMTPD_SHIM)]], ids=["module", "shim"])
def test_daemon_unreachable_gets_421_and_nothing_is_queued(
        tcpserver: Callable[..., Tcpserver], client: Callable[..., Client],
        record_dir: Path, tmp_path: Path, program: list[str]) -> None:
    stale = tmp_path / "stale.sock"  # a socket file a killed daemon left: ECONNREFUSED
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    for control in (tmp_path / "missing.sock", stale):
        c = client(tcpserver(program, control=control))
        assert c.reply() == b"421 mx.test service temporarily unavailable (#4.3.0)\r\n"
        assert c.closed_by_peer()
    assert recorded(record_dir) == []


def test_qmailqueue_outside_the_allowed_list_is_never_run(
    daemon: Daemon, tcpserver: Callable[..., Tcpserver], client: Callable[..., Client],
    record_dir: Path,
) -> None:
    # Anyone on the control socket chooses the session's environment, and the daemon may
    # run as root: a QMAILQUEUE it was not told to trust is ignored, the mail takes the
    # daemon's own (filtered) delivery, and the admin sees why in the log.
    c = client(tcpserver(), source="127.0.0.17")
    c.reply()
    replies = c.transaction("a@example.org", ["untrusted@example.com"], MESSAGE)
    assert replies[-1].startswith(b"250 ok "), replies
    assert recorded(record_dir) == []
    [msg] = daemon.spooled("example.com", "untrusted")
    assert msg.endswith(b"Subject: drop-in\n\nhello\n")
    assert "event=qmailqueue_ignored program='/bin/sh'" in daemon.wait_log("qmailqueue_ignored")


def test_stopped_daemon_gets_421_after_the_acknowledgement_timeout(
        make_daemon: list[Daemon], tcpserver: Callable[..., Tcpserver],
        client: Callable[..., Client], record_dir: Path, tmp_path: Path) -> None:
    """A daemon stopped with SIGSTOP still completes connect() through its listen
    backlog; without its acknowledgement within 5 s the client gets 421 and the
    connection is closed, and the daemon, continued, does not adopt it afterwards."""
    (tmp_path / "stopped").mkdir()
    d = start_daemon(tmp_path / "stopped", CONFIG)
    make_daemon.append(d)
    server = tcpserver(control=d.control)
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        c = client(server)
        started = time.monotonic()
        assert c.reply() == b"421 mx.test service temporarily unavailable (#4.3.0)\r\n"
        assert 4.5 < time.monotonic() - started < 9
        assert c.closed_by_peer()
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    assert "event=smtp_abandoned" in d.wait_log("event=smtp_abandoned")
    assert c.reply() == b""  # nothing more on the closed connection
    c = client(server)
    assert c.reply() == b"220 mx.test ESMTP\r\n"
    assert c.cmd("QUIT") == b"221 mx.test\r\n"
    assert recorded(record_dir) == []
