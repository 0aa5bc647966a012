"""STARTTLS, SMTPS and SMTP AUTH (users backend) through the real daemon, with smtplib,
swaks and exact reply bytes. Tests that fail logins use their own source address: the
daemon counts failures per IP."""

from __future__ import annotations

import shutil
import smtplib
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import Client, Daemon, body, codes, start_daemon
from tests.e2e.tls_support import account, b64, client_context, make_cert, plain, starttls, wrap
from tests.services import missing

Connect = Callable[..., Client]
USER, PASSWORD = "alice@example.com", "correct horse"
GREETING = b"220 mx.test ESMTP\r\n"
EHLO_PLAIN = (b"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 5000\r\n"
              b"250-SMTPUTF8\r\n250 STARTTLS\r\n")
EHLO_TLS = (b"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 5000\r\n"
            b"250-SMTPUTF8\r\n250 AUTH PLAIN LOGIN\r\n")
FAILED = b"535 5.7.8 authentication failed\r\n"
TOO_MANY = b"421 4.7.0 too many failed logins\r\n"
NOT_RCPTHOSTS = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
databytes = 5000
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{tmp}/spool"

[tls]
cert = "{tmp}/tls/cert.pem"
key = "{tmp}/tls/key.pem"
smtps_listen = ["127.0.0.1:0"]

[auth]
enabled = true
failure_delay_s = 1
max_failures_per_ip = 3
"""


@pytest.fixture(scope="module")
def tlsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("tlsd")
    make_cert(tmp / "tls")
    d = start_daemon(tmp, CONFIG)
    res = account(store(d), "passwd", USER, stdin=PASSWORD + "\n")
    assert (res.returncode, res.stdout) == (0, f"created {USER}\n"), res.stderr
    yield d
    assert d.stop() == 0


def store(d: Daemon) -> str:
    return f"sqlite+aiosqlite:///{d.tmp}/mailguard.db"


@pytest.fixture(scope="module")
def ctx(tlsd: Daemon) -> ssl.SSLContext:
    return client_context(tlsd.tmp / "tls" / "cert.pem")


@pytest.fixture(scope="module")
def by_ip(tlsd: Daemon) -> ssl.SSLContext:
    """For smtplib, which checks the name it connected to (127.0.0.1): the chain only."""
    ctx = client_context(tlsd.tmp / "tls" / "cert.pem")
    ctx.check_hostname = False
    return ctx


def tls_session(tlsd: Daemon, connect: Connect, ctx: ssl.SSLContext,
                source: str | None = None) -> Client:
    """Greeting, EHLO, STARTTLS, EHLO again: ready for AUTH."""
    c = connect(tlsd, source=source)
    assert c.reply() == GREETING
    assert c.cmd("EHLO client.test") == EHLO_PLAIN
    starttls(c, ctx)
    assert c.cmd("EHLO client.test") == EHLO_TLS
    return c


def test_ehlo_before_and_after_starttls(tlsd: Daemon, connect: Connect,
                                        ctx: ssl.SSLContext) -> None:
    c = tls_session(tlsd, connect, ctx)
    assert c.cmd("STARTTLS") == b"503 5.5.1 TLS already active\r\n"
    assert c.cmd("QUIT") == b"221 mx.test\r\n"


def test_starttls_forgets_the_session_and_drops_injected_commands(
        tlsd: Daemon, connect: Connect, ctx: ssl.SSLContext) -> None:
    c = connect(tlsd)
    c.reply()
    assert c.cmd("STARTTLS now") == b"501 5.5.4 syntax: STARTTLS takes no argument\r\n"
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    # CVE-2011-0411: a command pipelined in clear text after STARTTLS must not run in TLS
    c.send(b"STARTTLS\r\nRSET\r\n")
    assert c.reply() == b"220 ready to start TLS\r\n"
    wrap(c, ctx)
    assert c.cmd("EHLO client.test") == EHLO_TLS  # not "250 flushed" first
    assert c.cmd("RCPT TO:<b@example.com>") == b"503 MAIL first (#5.5.1)\r\n"  # forgotten


def test_failed_handshake_closes_only_that_connection(tlsd: Daemon, connect: Connect,
                                                       ctx: ssl.SSLContext) -> None:
    c = connect(tlsd, source="127.0.1.6")
    c.reply()
    assert c.cmd("STARTTLS") == b"220 ready to start TLS\r\n"
    c.send(b"EHLO not really a TLS ClientHello\r\n")
    assert c.closed_by_peer()
    tlsd.wait_log("event=tls_failed session=")
    tls_session(tlsd, connect, ctx)  # the daemon serves on


def test_auth_needs_tls(tlsd: Daemon, connect: Connect) -> None:
    c = connect(tlsd)
    c.reply()
    assert c.cmd("EHLO client.test") == EHLO_PLAIN
    assert c.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == b"538 5.7.11 encryption required\r\n"
    assert c.cmd("AUTH LOGIN") == b"538 5.7.11 encryption required\r\n"
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<out@foreign.test>") == NOT_RCPTHOSTS


def test_smtplib_starttls_login_relay(tlsd: Daemon, by_ip: ssl.SSLContext) -> None:
    with smtplib.SMTP(tlsd.host, tlsd.port, timeout=10) as s:
        s.starttls(context=by_ip)
        assert s.login(USER, PASSWORD) == (235, b"2.7.0 authentication successful")
        refused = s.sendmail(USER, ["out@foreign.test"], body("relayed").replace(
            b"To: b@example.com", b"To: out@foreign.test"))
        assert refused == {}
    [msg] = tlsd.spooled("foreign.test", "out")
    assert b"  by mx.test with ESMTPSA; " in msg
    tlsd.wait_log(f'mechanism=PLAIN user="{USER}" backend=users result=ok')
    assert PASSWORD not in tlsd.read_log()


def test_auth_login_exchange_and_replies(tlsd: Daemon, connect: Connect,
                                         ctx: ssl.SSLContext) -> None:
    c = tls_session(tlsd, connect, ctx, source="127.0.1.1")
    assert c.cmd("AUTH PLAIN") == b"334 \r\n"
    assert c.cmd("*") == b"501 5.7.0 authentication cancelled\r\n"
    assert c.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert c.cmd("not base64") == b"501 5.5.2 cannot decode response\r\n"
    assert c.cmd("AUTH CRAM-MD5") == b"504 5.5.4 unrecognized authentication type\r\n"
    assert c.cmd("AUTH") == b"501 5.5.4 syntax: AUTH mechanism [initial-response]\r\n"
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert c.cmd("AUTH LOGIN") == (
        b"503 5.5.1 AUTH not permitted during a mail transaction\r\n")
    assert c.cmd("RSET") == b"250 flushed\r\n"
    assert c.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert c.cmd(b64(USER)) == b"334 UGFzc3dvcmQ6\r\n"
    assert c.cmd(b64(PASSWORD)) == b"235 2.7.0 authentication successful\r\n"
    assert c.cmd("AUTH LOGIN") == b"503 5.5.1 already authenticated\r\n"
    replies = c.transaction(USER, ["far@foreign.test"], body("login"))
    assert codes(replies) == [250, 250, 354, 250]


def test_wrong_password_is_answered_after_the_delay(tlsd: Daemon, connect: Connect,
                                                     ctx: ssl.SSLContext) -> None:
    c = tls_session(tlsd, connect, ctx, source="127.0.1.2")
    started = time.monotonic()
    assert c.cmd(f"AUTH PLAIN {plain(USER, 'guess')}") == FAILED
    assert time.monotonic() - started >= 1.0  # failure_delay_s
    # acting for another identity (authzid) fails the same way
    assert c.cmd(f"AUTH PLAIN {plain(USER, PASSWORD, authzid='bob@example.com')}") == FAILED
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<out@foreign.test>") == NOT_RCPTHOSTS
    tlsd.wait_log('client=127.0.1.2 mechanism=PLAIN user="alice@example.com" backend=users '
                  "result=fail")


def test_brute_force_gets_421_and_close(tlsd: Daemon, connect: Connect,
                                        ctx: ssl.SSLContext) -> None:
    c = tls_session(tlsd, connect, ctx, source="127.0.1.3")
    assert c.cmd(f"AUTH PLAIN {plain(USER, 'guess1')}") == FAILED
    assert c.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert c.cmd(b64(USER)) == b"334 UGFzc3dvcmQ6\r\n"
    assert c.cmd(b64("guess2")) == FAILED
    assert c.cmd(f"AUTH PLAIN {plain(USER, 'guess3')}") == TOO_MANY
    assert c.closed_by_peer()
    # a new connection from that address is refused at once, even with the right password
    c2 = tls_session(tlsd, connect, ctx, source="127.0.1.3")
    started = time.monotonic()
    assert c2.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == TOO_MANY
    assert time.monotonic() - started < 1.0
    assert c2.closed_by_peer()
    # other addresses still log in
    c3 = tls_session(tlsd, connect, ctx, source="127.0.1.4")
    assert c3.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == (
        b"235 2.7.0 authentication successful\r\n")
    tlsd.wait_log("client=127.0.1.3 mechanism=PLAIN user=\"alice@example.com\" backend=users "
                  "result=locked")


def test_implicit_tls_listener(tlsd: Daemon, connect: Connect, ctx: ssl.SSLContext,
                               by_ip: ssl.SSLContext) -> None:
    c = connect(tlsd, index=1)
    wrap(c, ctx)
    assert c.reply() == GREETING
    assert c.cmd("EHLO client.test") == EHLO_TLS
    assert c.cmd("STARTTLS") == b"503 5.5.1 TLS already active\r\n"
    with smtplib.SMTP_SSL(tlsd.addresses[1][0], tlsd.addresses[1][1], context=by_ip,
                          timeout=10) as s:
        s.login(USER, PASSWORD)
        s.sendmail(USER, ["smtps@foreign.test"], body("smtps"))
    [msg] = tlsd.spooled("foreign.test", "smtps")
    assert b"  by mx.test with ESMTPSA; " in msg


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks(tlsd: Daemon, mechanism: str) -> None:
    if shutil.which("swaks") is None:
        missing("swaks is not installed")
    user = f"swaks-{mechanism.lower()}"
    rcpt = f"{user}@foreign.test"
    res = subprocess.run(
        ["swaks", "--server", f"{tlsd.host}:{tlsd.port}", "--tls", "--auth", mechanism,
         "--auth-user", USER, "--auth-password", PASSWORD, "--from", USER, "--to", rcpt,
         "--helo", "client.test", "--timeout", "20"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "<-  220 ready to start TLS" in res.stdout
    assert "<~  235 2.7.0 authentication successful" in res.stdout
    assert len(tlsd.spooled("foreign.test", user)) == 1


def test_account_commands_and_disabled_account(tlsd: Daemon, connect: Connect,
                                               ctx: ssl.SSLContext) -> None:
    url = store(tlsd)
    res = account(url, "add", "Bob@Example.com", "--password-stdin", stdin="bob password\n")
    assert (res.returncode, res.stdout) == (0, "added bob@example.com\n"), res.stderr
    assert account(url, "add", "bob@example.com").returncode == 1  # exists already
    res = account(url, "passwd", "bob@example.com", stdin="short\n")
    assert (res.returncode, res.stderr) == (
        1, "mailguard: password too short (at least 8 characters)\n")
    c = tls_session(tlsd, connect, ctx, source="127.0.1.5")
    assert c.cmd(f"AUTH PLAIN {plain('bob@example.com', 'bob password')}") == (
        b"235 2.7.0 authentication successful\r\n")
    assert account(url, "disable", "bob@example.com").stdout == "disabled bob@example.com\n"
    lines = account(url, "list").stdout.splitlines()
    assert "bob@example.com\tdisabled\tpassword" in lines
    assert f"{USER}\tactive\tpassword" in lines
    c2 = tls_session(tlsd, connect, ctx, source="127.0.1.5")
    assert c2.cmd(f"AUTH PLAIN {plain('bob@example.com', 'bob password')}") == FAILED
    assert account(url, "del", "bob@example.com").stdout == "deleted bob@example.com\n"
    assert account(url, "del", "bob@example.com").returncode == 1


def test_bad_certificate_stops_the_start(tmp_path: Path) -> None:
    cfg = tmp_path / "mg.toml"
    cfg.write_text(CONFIG.replace("{tmp}", str(tmp_path)))  # no tls/ directory: no files
    res = subprocess.run(
        ["mailguard", "serve", "--config", str(cfg), "--store", f"sqlite:///{tmp_path}/x.db"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert res.returncode == 2
    assert res.stderr == (f"mailguard: configuration error: {cfg}: tls.cert: "
                          f"{tmp_path}/tls/cert.pem: no such file\n")
