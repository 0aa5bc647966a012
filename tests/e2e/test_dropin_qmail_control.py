"""The drop-in session against qmail-smtpd's exact bytes, with the daemon reading a qmail
control dir as an admin configures it (`[server] qmail_control_dir`): smtpgreeting,
rcpthosts + morercpthosts.cdb, badmailfrom, localiphost, timeoutsmtpd; and TARPITCOUNT /
TARPITDELAY from tcprules. One checklist per test, the real tcpserver in front."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailguard.qmail.cdb import write_cdb
from tests.e2e.daemon_harness import RECORDER, Client, Daemon, start_daemon
from tests.e2e.tcpserver_harness import (
    LEAN_SMTPD,
    Tcpserver,
    build_rules,
    have_ucspi,
    lean_env,
    recorded,
    start_tcpserver,
)

pytestmark = pytest.mark.skipif(not have_ucspi(), reason="ucspi-tcp is not installed")

GREETING = "mx.test NO UCE"  # control/smtpgreeting: qmail-smtpd repeats it in 250 and 221
CONFIG = """
[server]
listen = ["127.0.0.1:0"]
qmail_control_dir = "{tmp}/control"
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{tmp}/spool"
"""
CONTROL = {
    "me": "mx.test\n",
    "smtpgreeting": f"{GREETING}\n",
    "rcpthosts": "example.com\n",
    "badmailfrom": "spammer@bad.test\n@evil.test\n",
    "localiphost": "example.com\n",
    "timeoutsmtpd": "1\n",
}
MORERCPTHOSTS = [b"more.example", b".deep.example"]  # as qmail-newmrh writes them
RULES = ['127.0.3.3:allow,TARPITCOUNT="1",TARPITDELAY="1"', ":allow"]

BMF = b"553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)\r\n"
NOT_RCPTHOSTS = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
TIMEOUT = b"451 timeout (#4.4.2)\r\n"
QUEUED = re.compile(rb"250 ok (\d+) qp (\d+)\r\n")
MESSAGE = b"Subject: checklist\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("dropin-control")
    control = tmp / "control"
    control.mkdir()
    for name, text in CONTROL.items():
        (control / name).write_text(text)
    write_cdb(control / "morercpthosts.cdb", [(k, b"") for k in MORERCPTHOSTS])
    d = start_daemon(tmp, CONFIG)
    yield d
    assert d.stop() == 0


@pytest.fixture
def record_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rec"
    d.mkdir()
    return d


@pytest.fixture
def server(daemon: Daemon, record_dir: Path, tmp_path: Path) -> Iterator[Tcpserver]:
    env = lean_env(daemon.control, QMAILQUEUE=str(RECORDER), RECORD_DIR=str(record_dir),
                   MAILGUARD_CONFIG=str(daemon.tmp / "mailguard.toml"))
    s = start_tcpserver(tmp_path, LEAN_SMTPD, env, build_rules(tmp_path, RULES))
    yield s
    s.stop()


@pytest.fixture
def client(server: Tcpserver) -> Iterator[Callable[[str], Client]]:
    clients: list[Client] = []

    def make(source: str) -> Client:
        c = Client("127.0.0.1", server.port, source=source)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def test_control_files_shape_the_session(client: Callable[[str], Client],
                                         record_dir: Path) -> None:
    c = client("127.0.3.1")
    assert c.reply() == f"220 {GREETING} ESMTP\r\n".encode()
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<b@example.com>") == b"250 ok\r\n"
    assert c.cmd("HELO client.test") == f"250 {GREETING}\r\n".encode()
    assert c.cmd("DATA") == b"503 MAIL first (#5.5.1)\r\n"  # HELO/EHLO end a transaction
    # qmail-smtpd's EHLO, byte for byte ([server] extensions unset: the drop-in default)
    assert c.cmd("EHLO client.test") == (
        f"250-{GREETING}\r\n250-PIPELINING\r\n250 8BITMIME\r\n").encode()
    for sender in ("spammer@bad.test", "Someone@EVIL.test"):  # badmailfrom: at RCPT
        assert c.cmd(f"MAIL FROM:<{sender}>") == b"250 ok\r\n"
        assert c.cmd("RCPT TO:<b@example.com>") == BMF
    assert c.cmd("MAIL FROM:<a@[127.0.0.1]>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<u@more.example>") == b"250 ok\r\n"  # morercpthosts.cdb
    assert c.cmd("RCPT TO:<u@x.deep.example>") == b"250 ok\r\n"  # its ".domain" entry
    assert c.cmd("RCPT TO:<u@deep.example>") == NOT_RCPTHOSTS
    assert c.cmd("RCPT TO:<postmaster@[127.0.0.1]>") == b"250 ok\r\n"  # localiphost
    assert c.cmd("RCPT TO:<u@[192.0.2.1]>") == NOT_RCPTHOSTS  # not one of our addresses
    assert c.cmd("DATA") == b"354 go ahead\r\n"
    c.send(MESSAGE + b".\r\n")
    m = QUEUED.fullmatch(c.reply())
    assert m
    assert abs(int(m.group(1)) - time.time()) < 60
    assert c.cmd("QUIT") == f"221 {GREETING}\r\n".encode()
    assert c.closed_by_peer()
    [(message, envelope)] = recorded(record_dir)
    assert envelope == (b"Fa@example.com\0Tu@more.example\0Tu@x.deep.example\0"
                        b"Tpostmaster@example.com\0\0")
    # "by" is control/me (qmail-smtpd writes TCPLOCALHOST: the run script's -l "$LOCAL" = me)
    assert message.startswith(
        b"Received: from unknown (HELO client.test) (127.0.3.1)\n  by mx.test with SMTP; ")
    # the qp is the pid of the QMAILQUEUE program (the recorder names its files with it)
    assert any(p.name.endswith(f".{m.group(2).decode()}.env") for p in record_dir.iterdir())


def test_timeoutsmtpd_idle_and_inside_data(client: Callable[[str], Client],
                                           record_dir: Path) -> None:
    idle = client("127.0.3.1")
    assert idle.reply() == f"220 {GREETING} ESMTP\r\n".encode()
    started = time.monotonic()
    assert idle.reply() == TIMEOUT
    assert 0.9 <= time.monotonic() - started < 5
    assert idle.closed_by_peer()
    stalled = client("127.0.3.1")
    stalled.reply()
    assert stalled.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert stalled.cmd("RCPT TO:<b@example.com>") == b"250 ok\r\n"
    assert stalled.cmd("DATA") == b"354 go ahead\r\n"
    stalled.send(b"Subject: half a message\r\n")
    assert stalled.reply() == TIMEOUT
    assert stalled.closed_by_peer()
    assert recorded(record_dir) == []


def test_tarpit_from_tcprules_delays_rcpts_but_is_not_idle_time(
        client: Callable[[str], Client], record_dir: Path) -> None:
    """TARPITCOUNT=1, TARPITDELAY=1: the 2nd and 3rd RCPT wait a second each. The wait is
    as long as timeoutsmtpd (1 s) and must not count as the client's idle time."""
    c = client("127.0.3.3")
    c.reply()
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    waits = []
    for rcpt in ("b@example.com", "c@example.com", "d@example.com"):
        started = time.monotonic()
        assert c.cmd(f"RCPT TO:<{rcpt}>") == b"250 ok\r\n"
        waits.append(time.monotonic() - started)
    assert waits[0] < 0.9 <= min(waits[1:]), waits
    assert c.cmd("DATA") == b"354 go ahead\r\n"
    c.send(MESSAGE + b".\r\n")
    assert QUEUED.fullmatch(c.reply())
    untarpitted = client("127.0.3.4")
    untarpitted.reply()
    assert untarpitted.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    started = time.monotonic()
    for rcpt in ("b@example.com", "c@example.com", "d@example.com"):
        assert untarpitted.cmd(f"RCPT TO:<{rcpt}>") == b"250 ok\r\n"
    assert time.monotonic() - started < 0.9
    assert untarpitted.cmd("DATA") == b"354 go ahead\r\n"
    untarpitted.send(MESSAGE + b".\r\n")
    assert QUEUED.fullmatch(untarpitted.reply())
    assert [env for _msg, env in recorded(record_dir)] == [
        b"Fa@example.org\0Tb@example.com\0Tc@example.com\0Td@example.com\0\0"] * 2
