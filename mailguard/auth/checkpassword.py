"""qmail's checkpassword interface (checkpassword(8), vpopmail's vchkpw speaks it).

The program gets `user\\0password\\0timestamp\\0` on fd 3 (at most 512 bytes) and exits 0
when they are right (after exec'ing its arguments, e.g. /bin/true), 1 when wrong, 111 on a
temporary problem. Here: 0 → ok; 111, a signal, a timeout or no program → TemporaryError
(454); any other status → wrong (vchkpw uses several).

fd 3 is placed with `os.posix_spawn` file actions, as mailguard/qmail/queue_program.py
does for fd 6 (subprocess can only place pipes on 0-2). The data is small enough to sit
in the pipe before the program starts, so nothing is written while it runs. stdin and stdout are
/dev/null, stderr is the daemon's (the program's own messages reach the log)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence

from mailguard.clock import Clock
from mailguard.errors import TemporaryError

log = logging.getLogger("mailguard.auth")

MAX_INPUT = 512  # checkpassword reads at most this much from fd 3
EXIT_OK, EXIT_BAD, EXIT_TEMP = 0, 1, 111
_REAP_S = 5.0  # after SIGKILL, how long to wait for the exit status


class CheckpasswordAuth:
    """Backend `checkpassword`: one run of the program per login attempt."""

    name = "checkpassword"

    def __init__(self, program: Sequence[str], clock: Clock, *, timeout_s: float,
                 env: Mapping[str, str] | None = None) -> None:
        if not program:
            raise ValueError("empty checkpassword command")
        self._program = list(program)
        self._clock = clock
        self._timeout_s = timeout_s
        self._env = dict(os.environ if env is None else env)

    async def verify(self, username: str, password: str, *, client_ip: str) -> str | None:
        data = f"{username}\0{password}\0{int(self._clock.now())}\0".encode(
            "utf-8", "surrogateescape"
        )
        if len(data) > MAX_INPUT or data.count(b"\0") != 3:
            return None  # the program could not read it either: a wrong login
        code = await self.run(data, {**self._env, "TCPREMOTEIP": client_ip})
        if code == EXIT_OK:
            return username
        if code == EXIT_TEMP or code < 0:
            raise TemporaryError(f"checkpassword: {self._program[0]} exited {code}")
        return None

    async def run(self, data: bytes, env: Mapping[str, str]) -> int:
        """Run the program with `data` on fd 3; its exit status (-N for signal N)."""
        pid = _spawn(self._program, env, data)
        waiter = asyncio.ensure_future(_exit_status(pid))
        try:
            done, _ = await asyncio.wait({waiter}, timeout=self._timeout_s)
            if not done:
                _kill(pid)
                await asyncio.wait({waiter}, timeout=_REAP_S)
                raise TemporaryError(
                    f"checkpassword: {self._program[0]} timed out after {self._timeout_s:g}s"
                )
            return waiter.result()
        finally:
            if not waiter.done():  # cancelled (client gone) or not reaped: never leave it
                waiter.cancel()
                _kill(pid)
                _reap_briefly(pid)


def _spawn(program: Sequence[str], env: Mapping[str, str], data: bytes) -> int:
    try:
        r, w = os.pipe()
    except OSError as e:
        raise TemporaryError(f"checkpassword: cannot create a pipe: {e}") from e
    try:
        try:
            os.write(w, data)  # <= 512 bytes: always fits in the pipe, never blocks
        finally:
            os.close(w)
        if r <= 3:  # keep the dup2 source away from its target (fds are close-on-exec)
            high = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(r)
            r = high
        try:
            return os.posix_spawn(
                program[0],
                list(program),
                dict(env),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, r, 3),
                ],
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                setsigmask=(),
            )
        except OSError as e:
            raise TemporaryError(f"checkpassword: cannot run {program[0]}: {e}") from e
    finally:
        os.close(r)


async def _exit_status(pid: int) -> int:
    """Wait for our child without blocking the loop: a pidfd becomes readable at exit."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(pid)
    try:
        ready: asyncio.Future[None] = loop.create_future()

        def exited() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(pidfd, exited)
        try:
            await ready
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    return _reap(pid)


def _reap(pid: int) -> int:
    """The exit code of a child whose pidfd became readable (a zombie: no waiting)."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _reap_briefly(pid: int) -> None:
    """Reap right after SIGKILL without awaiting (we may be cancelled); a process stuck in
    the kernel is left a zombie rather than blocking the loop."""
    for _ in range(50):
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        time.sleep(0.002)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
