"""The real ucspi-tcp `tcpserver` and `tcprules`, for the drop-in tests, and a driver of
programs with qmail-queue's fd 0 / fd 1 protocol."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.daemon_harness import RECORDER, ROOT
from tests.services import services_required

SMTPD_SHIM = ROOT / "qmail-hooks" / "qmail-smtpd"
QUEUE_SHIM = ROOT / "qmail-hooks" / "qmail-queue"
LEAN_SMTPD = [sys.executable, "-m", "mailguard.lean.smtpd"]
LEAN_QUEUE = [sys.executable, "-m", "mailguard.lean.queue"]


def have_ucspi() -> bool:
    """ucspi-tcp present — or required (CI): then a missing tcpserver fails the tests."""
    return bool(shutil.which("tcpserver") and shutil.which("tcprules")) or services_required()


def build_rules(tmp: Path, lines: list[str]) -> Path:
    """rules.cdb from tcprules lines such as `127.0.0.2:allow,RELAYCLIENT=""`."""
    cdb, work = tmp / "rules.cdb", tmp / "rules.tmp"
    subprocess.run(["tcprules", str(cdb), str(work)], input="\n".join(lines) + "\n",
                   text=True, check=True, timeout=30)
    return cdb


def lean_env(control: Path, **extra: str) -> dict[str, str]:
    """The environment a run script gives tcpserver / qmail-smtpd."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGUARD_", "TCP"))}
    env.update(MAILGUARD_CONTROL=str(control), MAILGUARD_PYTHON=sys.executable)
    env.update(extra)
    return env


@dataclass
class Tcpserver:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_tcpserver(tmp: Path, program: list[str], env: dict[str, str],
                    rules: Path | None = None) -> Tcpserver:
    """`tcpserver -1 -v -R -H -l localhost [-x rules] 127.0.0.1 0 program...` (offline
    flags: no DNS, no ident); `-1` prints the port it bound."""
    log = tmp / "tcpserver.log"
    cmd = ["tcpserver", "-1", "-v", "-R", "-H", "-l", "localhost"]
    if rules is not None:
        cmd += ["-x", str(rules)]
    cmd += ["127.0.0.1", "0", *program]
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise AssertionError(f"tcpserver did not start: {line!r} {log.read_text()}")
    return Tcpserver(proc, int(line), log)


@dataclass
class QueueRun:
    exit_code: int
    custom: bytes  # what the program wrote to fd 6
    stderr: bytes


def run_queue_program(program: list[str], message: bytes, envelope: bytes,
                      env: dict[str, str], *, fd6: bool = True) -> QueueRun:
    """As qmail-smtpd runs qmail-queue: the message into fd 0, closed, then the envelope
    into fd 1 (a pipe the program reads); fd 6 a pipe open for writing when `fd6`.
    posix_spawn's dup2 actions put the pipes on 0, 1, 2 and 6 (Popen cannot reach fd 6)."""
    pipes = [os.pipe() for _ in range(4 if fd6 else 3)]  # message, envelope, stderr, fd 6
    msg, env_p, err = pipes[0], pipes[1], pipes[2]
    actions = [(os.POSIX_SPAWN_DUP2, msg[0], 0), (os.POSIX_SPAWN_DUP2, env_p[0], 1),
               (os.POSIX_SPAWN_DUP2, err[1], 2)]
    if fd6:
        actions.append((os.POSIX_SPAWN_DUP2, pipes[3][1], 6))
    try:
        pid = os.posix_spawn(program[0], program, env, file_actions=actions)
    finally:
        for child_end in (msg[0], env_p[0], err[1], *(pipes[3][1:] if fd6 else ())):
            os.close(child_end)
    _write_close(msg[1], message)
    _write_close(env_p[1], envelope)
    with os.fdopen(err[0], "rb") as f:
        stderr = f.read()  # EOF when the program (and what it spawned) exited
    _, status = os.waitpid(pid, 0)
    custom = b""
    if fd6:
        with os.fdopen(pipes[3][0], "rb") as f:
            custom = f.read()
    return QueueRun(os.waitstatus_to_exitcode(status), custom, stderr)


def _write_close(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        with contextlib.suppress(BrokenPipeError):  # a program that exits early: its status
            while view:
                view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def recorded(directory: Path) -> list[tuple[bytes, bytes]]:
    """(message, envelope) pairs the recording qmail-queue stored, oldest first."""
    return [(p.with_suffix(".msg").read_bytes(), p.read_bytes())
            for p in sorted(directory.glob("*.env"))]


__all__ = ["RECORDER", "QueueRun", "Tcpserver", "build_rules", "recorded", "start_tcpserver"]
