"""SMTP AUTH with a qmail checkpassword program, without TLS (require_tls = false, no
certificate): what a vpopmail site running vchkpw on a private port would configure."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import Client, Daemon, body, codes, start_daemon
from tests.e2e.tls_support import b64, plain

Connect = Callable[..., Client]
CHECKPW = Path(__file__).resolve().parents[1] / "tools" / "checkpassword_test.py"
EHLO = (b"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE\r\n250-SMTPUTF8\r\n"
        b"250 AUTH LOGIN PLAIN\r\n")
OK = b"235 2.7.0 authentication successful\r\n"
FAILED = b"535 5.7.8 authentication failed\r\n"
TOO_MANY = b"421 4.7.0 too many failed logins\r\n"

CONFIG = f"""
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{{tmp}}/spool"

[auth]
enabled = true
require_tls = false
mechanisms = ["LOGIN", "PLAIN"]
backend = "checkpassword"
checkpassword = ["{CHECKPW}", "/bin/true"]
failure_delay_s = 0
"""


@pytest.fixture(scope="module")
def cpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("checkpw"), CONFIG)
    yield d
    assert d.stop() == 0


def test_no_certificate_no_starttls(cpd: Daemon, connect: Connect) -> None:
    c = connect(cpd)
    assert c.reply() == b"220 mx.test ESMTP\r\n"
    assert c.cmd("EHLO client.test") == EHLO
    assert c.cmd("STARTTLS") == b"502 unimplemented (#5.5.1)\r\n"  # as qmail-smtpd


def test_checkpassword_results(cpd: Daemon, connect: Connect) -> None:
    c = connect(cpd)
    c.reply()
    assert c.cmd("EHLO client.test") == EHLO
    assert c.cmd(f"AUTH PLAIN {plain('good', 'wrong')}") == (
        b"535 5.7.8 authentication failed\r\n")
    assert c.cmd(f"AUTH PLAIN {plain('tempfail', 'x')}") == (
        b"454 4.7.0 temporary authentication failure\r\n")
    assert c.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert c.cmd(b64("good")) == b"334 UGFzc3dvcmQ6\r\n"
    assert c.cmd(b64("secret")) == OK
    replies = c.transaction("good@example.com", ["far@foreign.test"], body("cp"))
    assert codes(replies) == [250, 250, 354, 250]
    [msg] = cpd.spooled("foreign.test", "far")
    assert b"  by mx.test with ESMTPA; " in msg  # authenticated, not encrypted
    log = cpd.wait_log("result=ok")
    assert 'mechanism=PLAIN user="tempfail" backend=checkpassword result=tempfail' in log
    assert 'mechanism=LOGIN user="good" backend=checkpassword result=ok' in log
    assert "secret" not in log


def test_smtplib_login_without_tls(cpd: Daemon) -> None:
    with smtplib.SMTP(cpd.host, cpd.port, timeout=10) as s:
        assert s.login("good", "secret")[0] == 235
        assert s.sendmail("good@example.com", ["other@foreign.test"], body("x")) == {}


def test_parallel_attempts_count_before_the_backend_answers(
        make_daemon: list[Daemon], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """20 sessions from one IP send AUTH at once (limit 5): attempts in flight count
    against the limit, so at most 5 reach checkpassword and the right password, sent
    among wrong ones, gets no 235 once the limit is used up."""
    record = tmp_path / "checkpw.record"
    monkeypatch.setenv("CHECKPW_RECORD", str(record))
    d = start_daemon(tmp_path, CONFIG.replace("failure_delay_s = 0",
                                              "failure_delay_s = 0\nmax_failures_per_ip = 5"))
    make_daemon.append(d)
    host, port = d.addresses[0]
    clients = [Client(host, port, source="127.0.0.55") for _ in range(20)]
    try:
        for c in clients:
            c.reply()
            assert c.cmd("EHLO client.test") == EHLO
        for i, c in enumerate(clients):  # all before any answer is read
            c.send(f"AUTH PLAIN {plain('good', 'secret' if i == 10 else 'wrong')}\r\n"
                   .encode())
        answers = [c.reply() for c in clients]
    finally:
        for c in clients:
            c.close()
    assert set(answers) <= {OK, FAILED, TOO_MANY}, answers
    decided = [a for a in answers if a != TOO_MANY]
    assert len(decided) <= 5, answers
    assert len(record.read_bytes().splitlines()) <= 5  # the backend saw at most 5
