"""STARTTLS and SMTP AUTH through the drop-in path: the real tcpserver + tcprules in front
of `mailguard smtpd`, the daemon adopting each connection. The certificate is qmail's TLS
patch convention (`control/servercert.pem`, key and certificate in one file, in the
daemon's qmail control dir); the mail goes to the recording qmail-queue (QMAILQUEUE).
Tests that fail logins use their own source addresses: failures are counted per IP, and
the IP is TCPREMOTEIP (here rewritten by tcprules to show it is not the socket peer)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import RECORDER, Client, Daemon, body, codes, start_daemon
from tests.e2e.tcpserver_harness import (
    LEAN_SMTPD,
    Tcpserver,
    build_rules,
    have_ucspi,
    lean_env,
    recorded,
    start_tcpserver,
)
from tests.e2e.tls_support import account, b64, client_context, make_cert, plain, starttls
from tests.services import missing

pytestmark = pytest.mark.skipif(not have_ucspi(), reason="ucspi-tcp is not installed")

CHECKPW = Path(__file__).resolve().parents[1] / "tools" / "checkpassword_test.py"
USER, PASSWORD = "alice@example.com", "correct horse"
GREETING = b"220 mx.test ESMTP\r\n"
EHLO_CLEAR = (b"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE\r\n"
              b"250-SMTPUTF8\r\n250 STARTTLS\r\n")
EHLO_TLS = (b"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE\r\n"
            b"250-SMTPUTF8\r\n250 AUTH PLAIN LOGIN\r\n")
OK = b"235 2.7.0 authentication successful\r\n"
FAILED = b"535 5.7.8 authentication failed\r\n"
TOO_MANY = b"421 4.7.0 too many failed logins\r\n"
NOT_RCPTHOSTS = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
QUEUED_PREFIX = b"250 ok "

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
qmail_control_dir = "{tmp}/control"
extensions = true  # STARTTLS and AUTH beyond qmail-smtpd's dialogue
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{tmp}/spool"

[auth]
enabled = true
failure_delay_s = 1
max_failures_per_ip = 3
"""
CHECKPASSWORD = f"""
backend = "checkpassword"
checkpassword = ["{CHECKPW}", "/bin/true"]
"""

RULES = [
    # two client addresses that tcprules presents as one remote IP (as a NAT would)
    '127.0.2.20:allow,TCPREMOTEIP="192.0.2.9"',
    '127.0.2.21:allow,TCPREMOTEIP="192.0.2.9"',
    ":allow",
]


def qmail_control(directory: Path) -> None:
    """A qmail control dir as an admin has it: me, rcpthosts, and the TLS patch's
    servercert.pem (key and certificate in one file)."""
    directory.mkdir()
    (directory / "me").write_text("mx.test\n")
    (directory / "rcpthosts").write_text("example.com\n")
    cert, key = make_cert(directory.parent / "tls")
    (directory / "servercert.pem").write_bytes(key.read_bytes() + cert.read_bytes())


def dropin_daemon(tmp: Path, extra: str = "") -> Daemon:
    qmail_control(tmp / "control")
    return start_daemon(tmp, CONFIG + extra)


@pytest.fixture(scope="module")
def usersd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = dropin_daemon(tmp_path_factory.mktemp("dropin-users"))
    res = account(f"sqlite+aiosqlite:///{d.tmp}/mailguard.db", "passwd", USER,
                  stdin=PASSWORD + "\n")
    assert res.returncode == 0, res.stderr
    yield d
    assert d.stop() == 0


@pytest.fixture(scope="module")
def checkpwd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = dropin_daemon(tmp_path_factory.mktemp("dropin-checkpw"), CHECKPASSWORD)
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
def serve(rules: Path, record_dir: Path, tmp_path: Path) -> Iterator[Callable[[Daemon], int]]:
    """serve(daemon) -> the port of a tcpserver running `mailguard smtpd` for it."""
    started: list[Tcpserver] = []

    def make(d: Daemon) -> int:
        env = lean_env(d.control, QMAILQUEUE=str(RECORDER), RECORD_DIR=str(record_dir),
                       MAILGUARD_CONFIG=str(d.tmp / "mailguard.toml"))
        server = start_tcpserver(tmp_path, LEAN_SMTPD, env, rules)
        started.append(server)
        return server.port

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def client() -> Iterator[Callable[[int, str], Client]]:
    clients: list[Client] = []

    def make(port: int, source: str) -> Client:
        c = Client("127.0.0.1", port, source=source)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def tls_ready(d: Daemon, c: Client) -> None:
    """Greeting, EHLO, STARTTLS, EHLO again: ready for AUTH."""
    assert c.reply() == GREETING
    assert c.cmd("EHLO client.test") == EHLO_CLEAR
    starttls(c, client_context(d.tmp / "tls" / "cert.pem"))
    assert c.cmd("EHLO client.test") == EHLO_TLS


def relay_one(c: Client, sender: str, rcpt: str) -> None:
    replies = c.transaction(sender, [rcpt], body("relayed"))
    assert codes(replies[:3]) == [250, 250, 354]
    assert replies[3].startswith(QUEUED_PREFIX), replies[3]
    assert c.cmd("QUIT") == b"221 mx.test\r\n"
    assert c.closed_by_peer()


def test_clear_text_session_cannot_auth_or_relay(
        usersd: Daemon, serve: Callable[[Daemon], int],
        client: Callable[[int, str], Client]) -> None:
    c = client(serve(usersd), "127.0.2.1")
    assert c.reply() == GREETING
    assert c.cmd("EHLO client.test") == EHLO_CLEAR
    assert c.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == b"538 5.7.11 encryption required\r\n"
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<out@foreign.test>") == NOT_RCPTHOSTS


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_auth_relays_with_esmtpsa(
        usersd: Daemon, serve: Callable[[Daemon], int], client: Callable[[int, str], Client],
        record_dir: Path, mechanism: str) -> None:
    c = client(serve(usersd), "127.0.2.2")
    tls_ready(usersd, c)
    if mechanism == "PLAIN":
        assert c.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == OK
    else:
        assert c.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
        assert c.cmd(b64(USER)) == b"334 UGFzc3dvcmQ6\r\n"
        assert c.cmd(b64(PASSWORD)) == OK
    relay_one(c, USER, "out@foreign.test")
    [(message, envelope)] = recorded(record_dir)
    assert envelope == b"Falice@example.com\0Tout@foreign.test\0\0"
    assert message.startswith(b"Received: from unknown (HELO client.test) (127.0.2.2)\n  by ")
    assert b" with ESMTPSA; " in message.split(b"\n", 2)[1]
    usersd.wait_log(f'client=127.0.2.2 mechanism={mechanism} user="{USER}" backend=users '
                    "result=ok")


def test_failures_are_delayed_counted_per_tcpremoteip_and_lock_out(
        usersd: Daemon, serve: Callable[[Daemon], int],
        client: Callable[[int, str], Client], record_dir: Path) -> None:
    port = serve(usersd)
    c = client(port, "127.0.2.20")  # TCPREMOTEIP=192.0.2.9 by tcprules
    tls_ready(usersd, c)
    started = time.monotonic()
    assert c.cmd(f"AUTH PLAIN {plain(USER, 'guess1')}") == FAILED
    assert time.monotonic() - started >= 1.0  # failure_delay_s
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<out@foreign.test>") == NOT_RCPTHOSTS  # no relaying after 535
    assert c.cmd("RSET") == b"250 flushed\r\n"
    assert c.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert c.cmd(b64(USER)) == b"334 UGFzc3dvcmQ6\r\n"
    assert c.cmd(b64("guess2")) == FAILED
    # another socket peer, the same TCPREMOTEIP: the third failure locks that IP out
    c2 = client(port, "127.0.2.21")
    tls_ready(usersd, c2)
    assert c2.cmd(f"AUTH PLAIN {plain(USER, 'guess3')}") == TOO_MANY
    assert c2.closed_by_peer()
    # locked: even the right password gets 421 at once, from either source address
    c3 = client(port, "127.0.2.20")
    tls_ready(usersd, c3)
    started = time.monotonic()
    assert c3.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == TOO_MANY
    assert time.monotonic() - started < 1.0
    assert c3.closed_by_peer()
    # an address tcprules leaves alone still logs in
    c4 = client(port, "127.0.2.22")
    tls_ready(usersd, c4)
    assert c4.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == OK
    log = usersd.wait_log("client=192.0.2.9 mechanism=PLAIN user=\"alice@example.com\" "
                          "backend=users result=locked")
    assert "client=127.0.2.20 " not in log and "client=127.0.2.21 " not in log
    assert recorded(record_dir) == []


def test_checkpassword_backend(checkpwd: Daemon, serve: Callable[[Daemon], int],
                               client: Callable[[int, str], Client],
                               record_dir: Path) -> None:
    port = serve(checkpwd)
    c = client(port, "127.0.2.30")
    tls_ready(checkpwd, c)
    assert c.cmd(f"AUTH PLAIN {plain('good', 'wrong')}") == FAILED
    assert c.cmd(f"AUTH PLAIN {plain('tempfail', 'x')}") == (
        b"454 4.7.0 temporary authentication failure\r\n")
    assert c.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert c.cmd(b64("good")) == b"334 UGFzc3dvcmQ6\r\n"
    assert c.cmd(b64("secret")) == OK
    relay_one(c, "good@example.com", "far@foreign.test")
    [(message, envelope)] = recorded(record_dir)
    assert envelope == b"Fgood@example.com\0Tfar@foreign.test\0\0"
    assert b" with ESMTPSA; " in message.split(b"\n", 2)[1]
    checkpwd.wait_log('client=127.0.2.30 mechanism=LOGIN user="good" backend=checkpassword '
                      "result=ok")


def test_swaks_through_tcpserver(usersd: Daemon, serve: Callable[[Daemon], int],
                                 record_dir: Path) -> None:
    if shutil.which("swaks") is None:
        missing("swaks is not installed")
    port = serve(usersd)
    res = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--local-interface", "127.0.2.40",
         "--tls", "--auth", "LOGIN", "--auth-user", USER, "--auth-password", PASSWORD,
         "--from", USER, "--to", "swaks@foreign.test", "--helo", "client.test",
         "--timeout", "20"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "<-  220 mx.test ESMTP" in res.stdout
    assert "<-  220 ready to start TLS" in res.stdout
    assert "<~  235 2.7.0 authentication successful" in res.stdout
    assert "<~  221 mx.test" in res.stdout
    [(_message, envelope)] = recorded(record_dir)
    assert envelope == b"Falice@example.com\0Tswaks@foreign.test\0\0"

