"""`mailguard queue` (QMAILQUEUE) against a running daemon whose inner qmail-queue is the
recording one: fed as qmail-smtpd feeds qmail-queue, it exits as qmail-queue would, and
the inner queue receives exactly the bytes."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import RECORDER, Client, Daemon, start_daemon
from tests.e2e.tcpserver_harness import (
    LEAN_QUEUE,
    LEAN_SMTPD,
    QUEUE_SHIM,
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

[delivery]
method = "qmail-queue"
qmail_queue = "{tmp}/inner-qq"

[queue]
deadline_s = 3

[control]
socket = "{tmp}/control.sock"
"""
CONSOLE = [sys.executable, "-m", "mailguard.cli.main", "queue"]  # = `mailguard queue`
MESSAGE = b"Received: (qmail 1 invoked by uid 0); 1 Jan 2026\nSubject: x\n\nNUL\0 CR\r 8bit \xe9\n"
ENVELOPE = b"Fa@example.org\0Tb@example.com\0Tc@example.net\0\0"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("queue")
    # The daemon's qmail-queue: the recording one, told per test (qq.env) how to behave.
    inner = tmp / "inner-qq"
    inner.write_text(f'#!/bin/sh\n. "{tmp}/qq.env"\nexec "{sys.executable}" "{RECORDER}"\n')
    inner.chmod(0o755)
    d = start_daemon(tmp, CONFIG)
    yield d
    assert d.stop() == 0


@pytest.fixture
def inner(daemon: Daemon, tmp_path: Path) -> Callable[..., Path]:
    """inner(FAKE_QQ_EXIT="31", ...) -> the directory the inner queue records into."""
    rec = tmp_path / "rec"
    rec.mkdir()

    def setup(**env: str) -> Path:
        lines = [f"export RECORD_DIR='{rec}'"] + [f"export {k}='{v}'" for k, v in env.items()]
        (daemon.tmp / "qq.env").write_text("\n".join(lines) + "\n")
        return rec

    setup()
    return setup


def env_for(daemon: Daemon, **extra: str) -> dict[str, str]:
    return lean_env(daemon.control, **extra)


@pytest.mark.parametrize("program", [LEAN_QUEUE, CONSOLE, [str(QUEUE_SHIM)]],
                         ids=["module", "console", "shim"])
def test_queued_exactly_as_given(daemon: Daemon, inner: Callable[..., Path],
                                 program: list[str]) -> None:
    rec = inner()
    run = run_queue_program(program, MESSAGE, ENVELOPE, env_for(daemon))
    assert (run.exit_code, run.custom) == (0, b""), run.stderr
    assert recorded(rec) == [(MESSAGE, ENVELOPE)]


def test_from_qmail_smtpd_and_from_local_programs(daemon: Daemon,
                                                  inner: Callable[..., Path]) -> None:
    rec = inner()
    smtp = env_for(daemon, TCPREMOTEIP="192.0.2.7", TCPLOCALIP="127.0.0.1")
    assert run_queue_program(LEAN_QUEUE, MESSAGE, ENVELOPE, smtp).exit_code == 0
    local = run_queue_program(LEAN_QUEUE, b"Subject: y\n\nz\n", b"F\0Troot@mx.test\0\0",
                              env_for(daemon), fd6=False)  # qmail-inject: bounce sender
    assert local.exit_code == 0
    assert [env for _msg, env in recorded(rec)] == [ENVELOPE, b"F\0Troot@mx.test\0\0"]
    log = daemon.wait_log("source=local")
    lines = [x for x in log.splitlines() if "event=transaction" in x]
    assert any("client=192.0.2.7" in x and "source=smtp" in x for x in lines), lines
    assert any("from=<> rcpts=root@mx.test" in x and "source=local" in x for x in lines)


@pytest.mark.parametrize(
    ("env", "fd6", "expected"),
    [
        ({"FAKE_QQ_EXIT": "31"}, True, (31, b"")),
        ({"FAKE_QQ_EXIT": "71"}, True, (71, b"")),
        ({"FAKE_QQ_EXIT": "11"}, True, (11, b"")),
        ({"FAKE_QQ_EXIT": "51"}, True, (51, b"")),
        ({"FAKE_QQ_EXIT": "53"}, False, (53, b"")),
        ({"FAKE_QQ_EXIT": "82", "FAKE_QQ_TEXT": "Dno thanks"}, True, (82, b"Dno thanks")),
        ({"FAKE_QQ_EXIT": "82", "FAKE_QQ_TEXT": "Zlater"}, True, (82, b"Zlater")),
        ({"FAKE_QQ_EXIT": "82", "FAKE_QQ_TEXT": "Dno thanks"}, False, (31, b"")),
        ({"FAKE_QQ_EXIT": "82", "FAKE_QQ_TEXT": "Zlater"}, False, (71, b"")),
    ],
)
def test_the_inner_queue_exit_status_passes_through(
        daemon: Daemon, inner: Callable[..., Path], env: dict[str, str], fd6: bool,
        expected: tuple[int, bytes]) -> None:
    inner(**env)
    run = run_queue_program(LEAN_QUEUE, MESSAGE, ENVELOPE, env_for(daemon), fd6=fd6)
    assert (run.exit_code, run.custom) == expected, run.stderr


@pytest.mark.parametrize(
    ("envelope", "code"),
    [
        (b"", 54),
        (b"Xa@b\0Tc@d\0\0", 91),
        (b"Fa@b\0Xc@d\0\0", 91),
        (b"Fa@b\0Tc@d\0", 54),  # no final NUL
        (b"Fa@b", 54),
        (b"F" + b"x" * 1003 + b"\0\0", 11),
    ],
)
def test_bad_envelopes_exit_as_qmail_queue(daemon: Daemon, inner: Callable[..., Path],
                                           envelope: bytes, code: int) -> None:
    rec = inner()
    run = run_queue_program(LEAN_QUEUE, MESSAGE, envelope, env_for(daemon))
    assert run.exit_code == code
    assert recorded(rec) == []


def test_deadline_gives_a_temporary_refusal(daemon: Daemon, inner: Callable[..., Path]) -> None:
    inner(FAKE_QQ_SLEEP="30")  # [queue] deadline_s = 3
    run = run_queue_program(LEAN_QUEUE, MESSAGE, ENVELOPE, env_for(daemon))
    assert (run.exit_code, run.custom) == (82, b"Z4.3.0 mail filter timed out, try again later")
    run = run_queue_program(LEAN_QUEUE, MESSAGE, ENVELOPE, env_for(daemon), fd6=False)
    assert run.exit_code == 71


@pytest.mark.parametrize("program", [LEAN_QUEUE, [str(QUEUE_SHIM)]], ids=["module", "shim"])
def test_daemon_unreachable_exits_71(daemon: Daemon, inner: Callable[..., Path],
                                     tmp_path: Path, program: list[str]) -> None:
    rec = inner()
    env = lean_env(tmp_path / "missing.sock")
    run = run_queue_program(program, MESSAGE, ENVELOPE, env)
    assert (run.exit_code, run.custom) == (71, b"")
    assert b"cannot reach the daemon" in run.stderr
    assert recorded(rec) == []


@pytest.mark.skipif(not have_ucspi(), reason="ucspi-tcp is not installed")
def test_qmailqueue_set_to_the_wrapper_in_a_dropin_session(
        daemon: Daemon, inner: Callable[..., Path], tmp_path: Path) -> None:
    """tcp.smtp sets QMAILQUEUE to the qmail-hooks wrapper: the session's mail goes
    through the wrapper, back through the daemon's QUEUE stage, to the real queue."""
    rec = inner(FAKE_QQ_EXIT="0")
    rules = build_rules(tmp_path, [f':allow,QMAILQUEUE="{QUEUE_SHIM}"'])
    server = start_tcpserver(tmp_path, LEAN_SMTPD, env_for(daemon), rules)
    c = Client("127.0.0.1", server.port)
    try:
        assert c.reply() == b"220 mx.test ESMTP\r\n"
        replies = c.transaction("a@example.org", ["b@example.com"], b"Subject: s\r\n\r\nb\r\n")
        assert re.fullmatch(rb"250 ok \d+ qp \d+\r\n", replies[-1])
        inner(FAKE_QQ_EXIT="82", FAKE_QQ_TEXT="Dnot today")
        replies = c.transaction("a@example.org", ["b@example.com"], b"Subject: t\r\n\r\nb\r\n")
        assert replies[-1] == b"554 not today\r\n"
    finally:
        c.close()
        server.stop()
    (message, envelope), _refused = recorded(rec)  # the recorder records, then exits 82
    assert envelope == b"Fa@example.org\0Tb@example.com\0\0"
    assert message.startswith(b"Received: from unknown (127.0.0.1)\n  by mx.test with SMTP; ")
    assert message.endswith(b"\nSubject: s\n\nb\n")


def test_message_over_the_size_limit_is_refused_permanently(
        make_daemon: list[Daemon], tmp_path: Path) -> None:
    """The SMTP limit (databytes) holds on this path too: qmail-smtpd without databytes
    passes any message down. qmail-queue has no status for "too big": 82 + qmail-smtpd's
    databytes text (so qmail-smtpd answers 554 with it), or 31 without fd 6."""
    rec = tmp_path / "rec"
    rec.mkdir()
    inner_qq = tmp_path / "inner-qq"
    inner_qq.write_text(f"#!/bin/sh\nexport RECORD_DIR='{rec}'\n"
                        f'exec "{sys.executable}" "{RECORDER}"\n')
    inner_qq.chmod(0o755)
    d = start_daemon(tmp_path, CONFIG.replace("shutdown_grace_s = 5",
                                              "shutdown_grace_s = 5\ndatabytes = 1000"))
    make_daemon.append(d)
    fits = b"Subject: x\n\n" + b"a" * (1000 - 12)
    assert len(fits) == 1000
    run = run_queue_program(LEAN_QUEUE, fits, ENVELOPE, env_for(d))
    assert (run.exit_code, run.custom) == (0, b""), run.stderr
    run = run_queue_program(LEAN_QUEUE, fits + b"b", ENVELOPE, env_for(d))
    assert (run.exit_code, run.custom) == (
        82, b"Dsorry, that message size exceeds my databytes limit (#5.3.4)")
    run = run_queue_program(LEAN_QUEUE, fits * 5000, ENVELOPE, env_for(d), fd6=False)
    assert run.exit_code == 31
    assert recorded(rec) == [(fits, ENVELOPE)]
    assert "event=queue_refused" in d.wait_log("event=queue_refused")


def test_stopped_daemon_exits_71_after_the_acknowledgement_timeout(
        make_daemon: list[Daemon], tmp_path: Path) -> None:
    """connect() succeeds through a SIGSTOPped daemon's listen backlog; without its
    acknowledgement within 5 s the wrapper exits 71 (the caller retries), and the
    daemon, continued, does not queue that copy."""
    rec = tmp_path / "rec"
    rec.mkdir()
    inner_qq = tmp_path / "inner-qq"
    inner_qq.write_text(f"#!/bin/sh\nexport RECORD_DIR='{rec}'\n"
                        f'exec "{sys.executable}" "{RECORDER}"\n')
    inner_qq.chmod(0o755)
    d = start_daemon(tmp_path, CONFIG)
    make_daemon.append(d)
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        run = run_queue_program(LEAN_QUEUE, MESSAGE, ENVELOPE, env_for(d))
        elapsed = time.monotonic() - started
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    assert (run.exit_code, run.custom) == (71, b""), run.stderr
    assert 4.5 < elapsed < 9
    assert b"no acknowledgement within 5 s" in run.stderr
    assert "gave up" in d.wait_log("gave up")
    assert recorded(rec) == []
    run = run_queue_program(LEAN_QUEUE, MESSAGE, ENVELOPE, env_for(d))
    assert (run.exit_code, run.custom) == (0, b""), run.stderr
    assert recorded(rec) == [(MESSAGE, ENVELOPE)]
