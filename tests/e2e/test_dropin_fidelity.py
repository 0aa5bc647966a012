"""Issue 11, drop-in fidelity, as a qmail admin checks it: qmail-hooks/qmail-smtpd in place
of qmail-smtpd answers with qmail-smtpd's bytes (EHLO, HELP and the bare-LF text of the
qmail-smtpd binary it replaces, `with SMTP`, the envelope as given); it runs on pipes
(socat's `EXEC:…,pipes` is what ucspi-ssl's sslserver hands a program) and behind the real
stunnel4 for SMTPS, where AUTH is offered after the wrapper's TLS; control-file edits
(rcpthosts, a rebuilt morercpthosts.cdb, timeoutsmtpd 0) take effect at the next
connection, and SIGHUP reloads mailguard.toml, refusing a broken one."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailguard.qmail.cdb import write_cdb
from tests.e2e.daemon_harness import RECORDER, Client, Daemon, body, start_daemon
from tests.e2e.tcpserver_harness import (
    SMTPD_SHIM,
    Tcpserver,
    have_ucspi,
    lean_env,
    recorded,
    start_tcpserver,
)
from tests.e2e.tls_support import client_context, make_cert, plain, wrap
from tests.services import services_required

pytestmark = pytest.mark.skipif(not have_ucspi(), reason="ucspi-tcp is not installed")

CHECKPW = Path(__file__).resolve().parents[1] / "tools" / "checkpassword_test.py"
CONFIG = """
[server]
listen = ["127.0.0.1:0"]
qmail_control_dir = "{tmp}/qmail/control"
shutdown_grace_s = 5
{extra_server}
[delivery]
method = "maildir"
spool = "{tmp}/spool"
{extra}"""
AUTH = f"""
[auth]
enabled = true
backend = "checkpassword"
checkpassword = ["{CHECKPW}", "/bin/true"]
"""
# The strings of netqmail-1.06's qmail-smtpd, as they sit in its binary (C literals).
NETQMAIL_SMTPD = (b"\x7fELF\x00...\x00220 \x00 ESMTP\r\n\x00"
                  b"214 qmail home page: http://pobox.com/~djb/qmail.html\r\n\x00"
                  b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n\x00")
QMAIL_EHLO = b"250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
QUEUED = re.compile(rb"250 ok \d+ qp \d+\r\n")
NOT_RCPTHOSTS = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
MESSAGE = b"Subject: fidelity\r\n\r\nhello\r\n"


def have(program: str) -> bool:
    return bool(shutil.which(program)) or services_required()


def qmail_home(tmp: Path, *, binary: bool = True) -> Path:
    """/var/qmail as a netqmail site has it: control files, and bin/qmail-smtpd."""
    control = tmp / "qmail" / "control"
    control.mkdir(parents=True)
    (control / "me").write_text("mx.test\n")
    (control / "rcpthosts").write_text("example.com\n")
    write_cdb(control / "morercpthosts.cdb", [(b"more.example", b"")])
    if binary:
        (tmp / "qmail" / "bin").mkdir()
        (tmp / "qmail" / "bin" / "qmail-smtpd").write_bytes(NETQMAIL_SMTPD)
    return control


def dropin_daemon(tmp: Path, *, extra_server: str = "", extra: str = "") -> Daemon:
    return start_daemon(tmp, CONFIG.replace("{extra_server}", extra_server)
                        .replace("{extra}", extra))


@pytest.fixture(scope="module")
def qmail_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The drop-in's defaults: qmail-smtpd's exact dialogue."""
    tmp = tmp_path_factory.mktemp("fidelity")
    qmail_home(tmp)
    d = dropin_daemon(tmp)
    yield d
    assert d.stop() == 0


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """`extensions = true`, AUTH (checkpassword), a certificate (servercert.pem)."""
    tmp = tmp_path_factory.mktemp("fidelity-tls")
    control = qmail_home(tmp, binary=False)
    cert, key = make_cert(tmp / "tls")
    (control / "servercert.pem").write_bytes(key.read_bytes() + cert.read_bytes())
    d = dropin_daemon(tmp, extra_server="extensions = true", extra=AUTH)
    yield d
    assert d.stop() == 0


@pytest.fixture
def record_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rec"
    d.mkdir()
    return d


def shim_env(d: Daemon, record_dir: Path, **extra: str) -> dict[str, str]:
    return lean_env(d.control, QMAILQUEUE=str(RECORDER), RECORD_DIR=str(record_dir),
                    MAILGUARD_CONFIG=str(d.tmp / "mailguard.toml"), **extra)


@pytest.fixture
def tcpserver(record_dir: Path, tmp_path: Path) -> Iterator[Callable[[Daemon], Tcpserver]]:
    started: list[Tcpserver] = []

    def make(d: Daemon) -> Tcpserver:
        server = start_tcpserver(tmp_path, [str(SMTPD_SHIM)], shim_env(d, record_dir))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}: {log.read_text()}")


Wrapper = Callable[[list[str], dict[str, str], int], None]


@pytest.fixture
def wrapper(tmp_path: Path) -> Iterator[Wrapper]:
    """wrapper(argv, env, port) starts socat / stunnel4 listening on `port` (`{port}` in
    argv is replaced by it) and waits until it accepts; stopped at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], env: dict[str, str], port: int) -> None:
        log = tmp_path / f"wrapper{len(procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([a.replace("{port}", str(port)) for a in argv], env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        procs.append(proc)
        wait_port(port, proc, log)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def connect(port: int) -> Client:
    return Client("127.0.0.1", port)


# --- the dialogue ---------------------------------------------------------------------------


def test_qmail_dialogue_under_tcpserver(qmail_daemon: Daemon,
                                        tcpserver: Callable[[Daemon], Tcpserver],
                                        record_dir: Path) -> None:
    c = connect(tcpserver(qmail_daemon).port)
    try:
        assert c.reply() == b"220 mx.test ESMTP\r\n"
        assert c.cmd("EHLO client.test") == QMAIL_EHLO
        # the words of the qmail-smtpd binary next to the control dir (netqmail here)
        assert c.cmd("HELP") == b"214 qmail home page: http://pobox.com/~djb/qmail.html\r\n"
        assert c.cmd("STARTTLS") == b"502 unimplemented (#5.5.1)\r\n"
        # qmail-smtpd reads nothing after the address: no SIZE refusal, no value checks
        assert c.cmd("MAIL FROM:<a@example.org> SIZE=999999999999999999999 BODY=x") == (
            b"250 ok\r\n")
        assert c.cmd("RCPT TO:<dave>") == b"250 ok\r\n"
        assert c.cmd("RCPT TO:<u@more.example>") == b"250 ok\r\n"
        assert c.cmd("DATA") == b"354 go ahead\r\n"
        c.send(MESSAGE + b".\r\n")
        assert QUEUED.fullmatch(c.reply())
        assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
        assert c.cmd("RCPT TO:<u@example.com>") == b"250 ok\r\n"
        assert c.cmd("DATA") == b"354 go ahead\r\n"
        c.send(b"bare\nLF\r\n.\r\n")
        assert c.reply() == b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n"
        assert c.closed_by_peer()
    finally:
        c.close()
    [(message, envelope)] = recorded(record_dir)
    assert envelope == b"Fa@example.org\0Tdave\0Tu@more.example\0\0"
    assert message.startswith(
        b"Received: from unknown (HELO client.test) (127.0.0.1)\n  by mx.test with SMTP; ")


def test_extensions_switch_and_sighup(tmp_path: Path,
                                      tcpserver: Callable[[Daemon], Tcpserver],
                                      record_dir: Path) -> None:
    qmail_home(tmp_path)
    d = dropin_daemon(tmp_path)
    try:
        server = tcpserver(d)
        c = connect(server.port)
        c.reply()
        assert c.cmd("EHLO x") == QMAIL_EHLO
        c.close()
        # the admin switches the extensions on: SIGHUP, no restart
        toml = d.tmp / "mailguard.toml"
        toml.write_text(toml.read_text().replace("shutdown_grace_s = 5",
                                                 "shutdown_grace_s = 5\nextensions = true"))
        d.proc.send_signal(signal.SIGHUP)
        d.wait_log("event=reloaded reason='SIGHUP'")
        c = connect(server.port)
        c.reply()
        assert c.cmd("EHLO x") == (b"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                   b"250-SIZE\r\n250 SMTPUTF8\r\n")
        assert QUEUED.fullmatch(c.transaction("a@example.org", ["b@example.com"],
                                              body("esmtp"))[-1])
        c.close()
        [(message, _)] = recorded(record_dir)
        assert b"\n  by mx.test with ESMTP; " in message
        # a broken file is refused with a clear line; the running configuration stays
        toml.write_text(toml.read_text().replace("extensions = true", "extensions = maybe"))
        d.proc.send_signal(signal.SIGHUP)
        line = d.wait_log("event=reload_failed")
        assert "reason='SIGHUP'" in line and "mailguard.toml" in line
        assert "kept=previous configuration" in line
        c = connect(server.port)
        c.reply()
        assert c.cmd("EHLO x").endswith(b"250-SIZE\r\n250 SMTPUTF8\r\n")
        c.close()
    finally:
        assert d.stop() == 0


# --- control files: the next connection sees the change ------------------------------------


def test_control_edits_take_effect_without_restart(
        tmp_path: Path, tcpserver: Callable[[Daemon], Tcpserver]) -> None:
    control = qmail_home(tmp_path)
    d = dropin_daemon(tmp_path)
    try:
        server = tcpserver(d)

        def rcpt(address: str) -> bytes:
            c = connect(server.port)
            try:
                c.reply()
                assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
                return c.cmd(f"RCPT TO:<{address}>")
            finally:
                c.close()

        assert rcpt("u@new.example") == NOT_RCPTHOSTS
        assert rcpt("u@newer.example") == NOT_RCPTHOSTS
        with open(control / "rcpthosts", "a") as fh:  # the admin's editor appends a line
            fh.write("new.example\n")
        assert rcpt("u@new.example") == b"250 ok\r\n"
        # qmail-newmrh: a new cdb written aside, then renamed over the old one
        write_cdb(control / "morercpthosts.tmp", [(b"more.example", b""),
                                                  (b"newer.example", b"")])
        os.rename(control / "morercpthosts.tmp", control / "morercpthosts.cdb")
        assert rcpt("u@newer.example") == b"250 ok\r\n"
        d.wait_log("event=reloaded reason='control files changed'")
        # timeoutsmtpd 0 is qmail-smtpd's one second (`if (timeout <= 0) timeout = 1;`)
        (control / "timeoutsmtpd").write_text("0\n")
        c = connect(server.port)
        try:
            assert c.reply() == b"220 mx.test ESMTP\r\n"
            started = time.monotonic()
            assert c.reply() == b"451 timeout (#4.4.2)\r\n"
            assert 0.8 <= time.monotonic() - started < 4
        finally:
            c.close()
        # a broken control file: logged once, the previous values stay in use
        (control / "databytes").write_text("lots\n")
        assert rcpt("u@newer.example") == b"250 ok\r\n"
        assert "databytes" in d.wait_log("event=reload_failed")
    finally:
        assert d.stop() == 0


# --- pipes and SMTPS wrappers -----------------------------------------------------------------


@pytest.mark.skipif(not have("socat"), reason="socat is not installed")
def test_session_over_pipes(qmail_daemon: Daemon, record_dir: Path,
                            wrapper: Wrapper) -> None:
    """socat hands the shim two pipes (fd 0 read, fd 1 write), as sslserver does."""
    env = shim_env(qmail_daemon, record_dir, TCPREMOTEIP="192.0.2.7", TCPLOCALIP="127.0.0.1")
    port = free_port()
    wrapper(["socat", "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
             f"EXEC:{SMTPD_SHIM},pipes"], env, port)
    c = connect(port)
    try:
        assert c.reply() == b"220 mx.test ESMTP\r\n"
        assert c.cmd("EHLO client.test") == QMAIL_EHLO  # no TLS claimed: qmail's dialogue
        big = MESSAGE + b"x" * 200_000 + b"\r\n"  # more than any pipe or socket buffer
        # pipelined, then the client's half-close: every reply still comes back
        c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        assert [c.reply() for _ in range(3)] == [b"250 ok\r\n", b"250 ok\r\n",
                                                 b"354 go ahead\r\n"]
        c.send(big + b".\r\nQUIT\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        assert QUEUED.fullmatch(c.reply())
        assert c.reply() == b"221 mx.test\r\n"
        assert c.closed_by_peer()
    finally:
        c.close()
    [(message, envelope)] = recorded(record_dir)
    assert envelope == b"Fa@example.org\0Tb@example.com\0\0"
    assert message.startswith(
        b"Received: from unknown (HELO client.test) (192.0.2.7)\n  by mx.test with SMTP; ")
    assert message.endswith(b"\n\nhello\n" + b"x" * 200_000 + b"\n")  # unchanged bytes


@pytest.mark.skipif(not have("socat"), reason="socat is not installed")
def test_sslserver_environment_offers_auth(tls_daemon: Daemon, record_dir: Path,
                                           wrapper: Wrapper) -> None:
    """sslserver's SSL_PROTOCOL / SSL_CIPHER on pipes: AUTH at once, no STARTTLS."""
    env = shim_env(tls_daemon, record_dir, TCPREMOTEIP="192.0.2.8", TCPLOCALIP="127.0.0.1",
                   SSL_PROTOCOL="TLSv1.3", SSL_CIPHER="TLS_AES_256_GCM_SHA384")
    port = free_port()
    wrapper(["socat", "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
             f"EXEC:{SMTPD_SHIM},pipes"], env, port)
    c = connect(port)
    try:
        c.reply()
        ehlo = c.cmd("EHLO client.test")
        assert ehlo.endswith(b"250-SMTPUTF8\r\n250 AUTH PLAIN LOGIN\r\n")
        assert b"STARTTLS" not in ehlo
        assert c.cmd(f"AUTH PLAIN {plain('good', 'secret')}").startswith(b"235 ")
    finally:
        c.close()


@pytest.mark.skipif(not have("stunnel4"), reason="stunnel4 is not installed")
def test_smtps_behind_stunnel(tls_daemon: Daemon, record_dir: Path, tmp_path: Path,
                              wrapper: Wrapper) -> None:
    """stunnel4 runs the TLS and execs the shim on a socketpair; MAILGUARD_TLS says so.
    The client sees implicit TLS (port 465 style): AUTH offered, no STARTTLS, relaying
    after AUTH, `with ESMTPSA`."""
    cert, key = tls_daemon.tmp / "tls" / "cert.pem", tls_daemon.tmp / "tls" / "key.pem"
    port = free_port()
    conf = tmp_path / "stunnel.conf"
    conf.write_text(f"""foreground = yes
pid =
[smtps]
accept = 127.0.0.1:{port}
cert = {cert}
key = {key}
exec = /usr/bin/env
execArgs = env MAILGUARD_TLS=stunnel TCPLOCALIP=127.0.0.1 {SMTPD_SHIM}
""")
    wrapper(["stunnel4", str(conf)], shim_env(tls_daemon, record_dir), port)
    c = connect(port)
    wrap(c, client_context(cert))
    try:
        assert c.reply() == b"220 mx.test ESMTP\r\n"
        ehlo = c.cmd("EHLO client.test")
        assert ehlo.endswith(b"250-SMTPUTF8\r\n250 AUTH PLAIN LOGIN\r\n")
        assert b"STARTTLS" not in ehlo
        assert c.cmd(f"AUTH PLAIN {plain('good', 'secret')}").startswith(b"235 ")
        replies = c.transaction("good@example.com", ["far@foreign.test"], body("smtps"))
        assert QUEUED.fullmatch(replies[-1]), replies
        assert c.cmd("QUIT") == b"221 mx.test\r\n"
    finally:
        c.close()
    [(message, envelope)] = recorded(record_dir)
    assert envelope == b"Fgood@example.com\0Tfar@foreign.test\0\0"
    # stunnel's REMOTE_HOST is the client: no TCPREMOTEIP behind it
    assert message.startswith(b"Received: from unknown (HELO client.test) (127.0.0.1)\n"
                              b"  by mx.test with ESMTPSA; ")
    assert isinstance(c.sock, ssl.SSLSocket)
