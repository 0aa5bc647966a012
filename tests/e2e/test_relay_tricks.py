"""Relay tricks from a stranger (issue #12), against both front ends: the daemon's own
listener and the drop-in `mailguard smtpd` under the real tcpserver. tests/e2e/test_relay.py
pins the exact replies of the daemon for the classic forms; this table adds more forms,
the drop-in, and checks what matters in the end: no 250 for a recipient another MTA
would route elsewhere, and nothing in the queue for one. Each session also names a
local recipient so that DATA runs and the queue can be inspected.

RELAYCLIENT misuse: a stranger cannot talk its way into relaying (XCLIENT, a RELAYCLIENT
"command"), and a local user who is not trusted cannot hand the daemon a session with
RELAYCLIENT (or a relay network's TCPREMOTEIP) over the control socket."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import RECORDER, ROOT, Client, Daemon, start_daemon
from tests.e2e.fault_support import QueueProgram
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

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com", ".sub.example.net"]
relay_networks = ["127.0.0.2/32"]
shutdown_grace_s = 3

[delivery]
method = "qmail-queue"
qmail_queue = "{tmp}/qmail-queue"

[control]
socket = "SOCKDIR/control.sock"
socket_mode = 438
trusted_users = []
"""
RULES = ['127.0.0.2:allow,RELAYCLIENT=""', ":allow"]
LOCAL = ("example.com", "mx.test")  # mx.test: what qmail qualifies a bare local part with
STRANGER = "127.0.0.3"

# The forms; "victim" is always the person on another network.
TRICKS = [
    "<victim@foreign.test>",
    "<VICTIM@FOREIGN.TEST>",
    "<victim@foreign.test.>",
    "<victim@FOREIGN.test.>",
    "victim@foreign.test",  # no brackets (qmail: the address follows the colon)
    "<@example.com:victim@foreign.test>",  # source route through us
    "<@example.com,@mx.test:victim@foreign.test>",
    "<@foreign.test:victim@example.com>",  # a route elsewhere, but delivered here
    "<victim%foreign.test@example.com>",  # the % hack
    "<victim%foreign.test@EXAMPLE.COM>",
    "<victim%foreign.test>",
    "<victim@foreign.test%example.com>",
    "<victim@example.com%foreign.test>",
    "<foreign.test!victim@example.com>",  # bang paths
    "<foreign.test!victim>",
    "<foreign.test!victim@mx.test>",
    "<\"victim@foreign.test\"@example.com>",  # quoted local parts
    "<\"victim@foreign.test\">",
    "<\"victim%foreign.test\"@example.com>",
    "<victim\\@foreign.test@example.com>",  # escaped @
    "<victim@foreign.test@example.com>",  # u@d@e
    "<victim@example.com@foreign.test>",
    "<victim@[192.0.2.1]>",  # IP literals
    "<victim@[IPv6:2001:db8::1]>",
    "<victim@[127.0.0.1]>",  # our own address (localiphost is mx.test, not in rcpthosts)
    "<victim@example.com.>",  # trailing dots
    "<victim@example.com..>",
    "<victim@.example.com>",
    "<victim@sub.example.net>",  # ".sub.example.net": subdomains only
    "<victim@foreign.test.sub.example.net.>",
    "<victim@example.com.foreign.test>",
    "<victim@>",
    "<victim@foreign.test> <ok@example.com>",
    "<victim@foreign.test\tok@example.com>",
    "<victim@foreign.test\0@example.com>",  # a NUL ends qmail's command line
]


def routable(rcpt: str) -> bool:
    """Would another MTA deliver this envelope recipient somewhere else? Its domain is
    not ours, or its local part still routes (%, !, @)."""
    local, at, domain = rcpt.rpartition("@")
    if not at:
        local, domain = rcpt, "mx.test"
    domain = domain.lower()
    ours = domain in LOCAL or domain.endswith(".sub.example.net")
    return not ours or any(c in local for c in "%!@")


def queued_rcpts(directory: Path) -> list[str]:
    out: list[str] = []
    for _msg, env in recorded(directory):
        out += [p[1:].decode("utf-8", "replace") for p in env.split(b"\0")[1:]
                if p.startswith(b"T")]
    return out


@dataclass
class RelayDaemon:
    daemon: Daemon
    rec: Path  # where its qmail-queue records
    control: Path  # its control socket


@pytest.fixture(scope="module")
def relay_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayDaemon]:
    tmp = tmp_path_factory.mktemp("relaytricks")
    qq = QueueProgram(tmp)
    # pytest's temporary directories are private to root: the control socket goes where
    # an untrusted local user can reach it (the test below is about that user)
    sockdir = Path(tempfile.mkdtemp(prefix="mg-relay-"))
    sockdir.chmod(0o755)
    try:
        d = start_daemon(tmp, CONFIG.replace("SOCKDIR", str(sockdir)))
        yield RelayDaemon(d, qq.rec, sockdir / "control.sock")
        assert d.stop() == 0
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.fixture(scope="module")
def dropin(relay_daemon: RelayDaemon,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Tcpserver, Path]]:
    d = relay_daemon.daemon
    tmp = tmp_path_factory.mktemp("relaytricks-dropin")
    rec = tmp / "rec"
    rec.mkdir()
    env = lean_env(relay_daemon.control, QMAILQUEUE=str(RECORDER), RECORD_DIR=str(rec),
                   MAILGUARD_CONFIG=str(d.tmp / "mailguard.toml"))
    server = start_tcpserver(tmp, LEAN_SMTPD, env, build_rules(tmp, RULES))
    yield server, rec
    server.stop()


Target = tuple[str, int, Path]


@pytest.fixture(params=["daemon", "drop-in"])
def front(request: pytest.FixtureRequest) -> Target:
    if request.param == "daemon":
        rd: RelayDaemon = request.getfixturevalue("relay_daemon")
        return rd.daemon.host, rd.daemon.port, rd.rec
    server, rec = request.getfixturevalue("dropin")
    return "127.0.0.1", server.port, rec


def session(target: Target, rcpt_arg: str, *, source: str = STRANGER,
            before: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """MAIL, the trick, a local recipient, DATA. Returns (reply to the trick, final)."""
    host, port, _ = target
    c = Client(host, port, source=source)
    try:
        assert c.reply().startswith(b"220")
        assert c.cmd("HELO stranger.test").startswith(b"250")
        for line in before:
            c.cmd(line)
        assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
        trick = c.cmd(f"RCPT TO:{rcpt_arg}".encode("utf-8", "surrogateescape"))
        assert c.cmd("RCPT TO:<ok@example.com>") == b"250 ok\r\n"
        assert c.cmd("DATA") == b"354 go ahead\r\n"
        c.send(b"From: a@example.org\r\nSubject: relay trick\r\n\r\nhi\r\n.\r\n")
        final = c.reply()
        c.cmd("QUIT")
        return trick, final
    finally:
        c.close()


@pytest.mark.parametrize("rcpt_arg", TRICKS)
def test_stranger_cannot_relay(front: Target, rcpt_arg: str) -> None:
    before = Counter(queued_rcpts(front[2]))
    trick, final = session(front, rcpt_arg)
    assert final.startswith(b"250 ok "), final
    assert trick[:1] in (b"2", b"5"), trick  # an answer, not a 4xx to retry forever
    new = list((Counter(queued_rcpts(front[2])) - before).elements())
    relayed = [r for r in new if routable(r)]
    assert relayed == [], f"{rcpt_arg!r} answered {trick!r}; queued for {relayed}"
    if trick.startswith(b"250"):
        # accepted: then it was a local recipient after all, and it is in the queue
        assert len(new) >= 2, f"{rcpt_arg!r} got 250 but only {new} were queued"


@pytest.mark.parametrize("command", ["XCLIENT ADDR=127.0.0.2", "RELAYCLIENT",
                                     "XFORWARD ADDR=127.0.0.2", "EHLO localhost",
                                     "HELO [127.0.0.2]"])
def test_stranger_cannot_talk_its_way_into_relaying(front: Target, command: str) -> None:
    trick, _ = session(front, "<victim@foreign.test>", before=(command,))
    assert trick.startswith(b"553 "), trick
    assert not [r for r in queued_rcpts(front[2]) if routable(r)]


def test_relay_client_still_relays(front: Target) -> None:
    """The control row: the relay network's address may relay (tcprules RELAYCLIENT for
    the drop-in, relay_networks for the daemon)."""
    trick, final = session(front, "<out@foreign.test>", source="127.0.0.2")
    assert trick == b"250 ok\r\n" and final.startswith(b"250 ok ")
    assert "out@foreign.test" in queued_rcpts(front[2])


SYSTEM_PYTHON = "/usr/bin/python3"
HAND_OVER = r"""
import os, sys
from mailguard.control import protocol
fd = int(sys.argv[2])
ctl = protocol.connect(sys.argv[1], 5)
env = {"TCPREMOTEIP": "127.0.0.2", "RELAYCLIENT": "", "TCPLOCALIP": "127.0.0.1"}
protocol.send_request(ctl, {"v": 1, "op": "smtp", "env": env}, [fd])
os.close(fd)
reader = protocol.LineReader(ctl)
print(reader.read(), reader.read(), flush=True)
"""


def test_untrusted_local_user_cannot_hand_over_relayclient(
        relay_daemon: RelayDaemon) -> None:
    """A local user (nobody) who may connect to the control socket but is not trusted
    hands over a session claiming RELAYCLIENT and a relay network's address: the daemon
    drops that environment (logged) and the stranger still cannot relay."""
    d, rec = relay_daemon.daemon, relay_daemon.rec
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = Client(*listener.getsockname()[:2], source=STRANGER)
        try:
            server_side, _ = listener.accept()
            with server_side:
                # the venv's python lives under /root: run the stdlib-only protocol
                # module with the system's python (Debian's python3, as in CI)
                proc = subprocess.Popen(
                    [SYSTEM_PYTHON, "-c", HAND_OVER, str(relay_daemon.control),
                     str(server_side.fileno())],
                    pass_fds=[server_side.fileno()], user="nobody", group="nogroup",
                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                         "PYTHONDONTWRITEBYTECODE": "1"})
            greeting = client.reply()
            if not greeting.startswith(b"220"):
                _, err = proc.communicate(timeout=15)
                raise AssertionError(f"{greeting!r} {err!r}\n{d.read_log()[-2000:]}")
            assert client.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
            reply = client.cmd("RCPT TO:<victim@foreign.test>")
            client.cmd("QUIT")
        finally:
            client.close()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert reply.startswith(b"553 "), reply
    log = d.wait_log("event=control_untrusted")
    assert "RELAYCLIENT" in log and "TCPREMOTEIP" in log
    assert "victim@foreign.test" not in queued_rcpts(rec)


def test_relay_checks_reach_every_form(front: Target) -> None:
    """Guard against a vacuous table: the stranger's own local mail does get through."""
    trick, final = session(front, "<someone@example.com>")
    assert trick == b"250 ok\r\n" and final.startswith(b"250 ok ")
