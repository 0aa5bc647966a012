"""Issue 12: the QMAILQUEUE path honours the per-client `DATABYTES` of tcp.smtp, as
qmail-smtpd (which passes its environment to the wrapper) and a drop-in session do:
`[server] databytes` is only the default. `DATABYTES="0"` means no limit (up to
`max_message_bytes`). An untrusted peer cannot raise its limit (its environment is not
believed: docs/control-socket.md)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import RECORDER, Daemon, start_daemon
from tests.e2e.tcpserver_harness import LEAN_QUEUE, lean_env, recorded, run_queue_program

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
shutdown_grace_s = 5
databytes = 1000
max_message_bytes = 20000

[delivery]
method = "qmail-queue"
qmail_queue = "{tmp}/inner-qq"

[control]
socket = "{ctl}/control.sock"
socket_mode = 0o666
"""
ENVELOPE = b"Fa@example.org\0Tb@example.com\0\0"
TOO_BIG = b"Dsorry, that message size exceeds my databytes limit (#5.3.4)"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("qdatabytes")
    ctl = Path(tempfile.mkdtemp(prefix="mg-ctl-", dir="/tmp"))
    ctl.chmod(0o755)  # nobody must reach the socket
    inner = tmp / "inner-qq"
    inner.write_text(f"#!/bin/sh\nexport RECORD_DIR='{tmp}/rec'\n"
                     f'exec "{sys.executable}" "{RECORDER}"\n')
    inner.chmod(0o755)
    (tmp / "rec").mkdir()
    d = start_daemon(tmp, CONFIG.replace("{ctl}", str(ctl)))
    yield d
    assert d.stop() == 0
    shutil.rmtree(ctl, ignore_errors=True)


def message(size: int) -> bytes:
    head = b"Subject: size\n\n"
    return head + b"a" * (size - len(head))


def queue(d: Daemon, size: int, prefix: tuple[str, ...] = (), **env: str) -> tuple[int, bytes]:
    text = (d.tmp / "mailguard.toml").read_text()
    control = Path(text.split('socket = "', 1)[1].split('"', 1)[0])
    before = len(recorded(d.tmp / "rec"))
    run = run_queue_program([*prefix, *LEAN_QUEUE], message(size), ENVELOPE,
                            lean_env(control, TCPREMOTEIP="192.0.2.7", **env))
    if run.exit_code == 0:
        assert len(recorded(d.tmp / "rec")) == before + 1
    return run.exit_code, run.custom


def test_the_clients_databytes_replaces_the_servers(daemon: Daemon) -> None:
    assert queue(daemon, 1001) == (82, TOO_BIG)  # [server] databytes without DATABYTES
    assert queue(daemon, 5000, DATABYTES="5000") == (0, b"")
    assert queue(daemon, 5001, DATABYTES="5000") == (82, TOO_BIG)
    assert queue(daemon, 900, DATABYTES="500") == (82, TOO_BIG)
    assert queue(daemon, 900, DATABYTES="500x") == (82, TOO_BIG)  # qmail's scan_ulong


def test_databytes_zero_is_no_limit_but_max_message_bytes(daemon: Daemon) -> None:
    assert queue(daemon, 20000, DATABYTES="0") == (0, b"")
    assert queue(daemon, 20001, DATABYTES="0") == (82, TOO_BIG)
    assert queue(daemon, 20000, DATABYTES="") == (0, b"")  # no digits: 0, as qmail


def test_an_untrusted_peer_cannot_raise_its_limit(daemon: Daemon) -> None:
    as_nobody = (SETPRIV, "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    assert queue(daemon, 5000, as_nobody, DATABYTES="5000") == (82, TOO_BIG)
