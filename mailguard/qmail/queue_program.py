"""Run qmail-queue (or a program speaking its protocol) without blocking the event loop.

The protocol (qmail-queue(8), qmail.c): the message on the child's fd 0, the envelope on its
fd 1, and — notqmail 1.09+ — fd 6 open for writing "D<text>"/"Z<text>" before exit 82.

How fd 6 is arranged: subprocess (and asyncio.create_subprocess_exec) can only place pipes
on fds 0-2, and `pass_fds` keeps a descriptor's number, so putting a pipe on fd 6 would need
a `preexec_fn` (Python code between fork and exec: unsafe with threads) or a shell shim
(`exec 6>&N` only works for N < 10 in dash). We use `os.posix_spawn` instead: its
POSIX_SPAWN_DUP2 file actions place the three pipes on 0, 1 and 6 in the child, it spawns
with vfork-like speed even from a big process, it is thread-safe, and glibc reports a failed
exec as an OSError in the parent — our "unable to exec qq". Our pipe ends are moved above
fd 9 first, so no dup2 source is a target of an earlier action, and all of them are
close-on-exec (PEP 446), so only the dup2 copies reach the program. posix_spawn cannot
chdir (Python 3.11 has no POSIX_SPAWN_CHDIR), so with `cwd` we spawn `/bin/sh -c 'cd ...;
exec ...'`; like qmail.c's child, a failed chdir exits 61. The exit is awaited with a pidfd
(Linux ≥ 5.3) registered with the loop, or by polling waitpid(WNOHANG) elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailguard.body import Body, Message, as_body
from mailguard.errors import TemporaryError
from mailguard.qmail.envelope import encode
from mailguard.qmail.exitcodes import (
    EX_EXEC_FAILED,
    EX_OK,
    EX_READ_ERROR,
    EX_TIMEOUT,
    EX_WAITPID_SURPRISE,
    reply_for_exit,
)
from mailguard.qmail.replies import accepted_reply

if TYPE_CHECKING:
    from mailguard.clock import Clock
    from mailguard.verdict import Reply

CUSTOM_FD = 6
_CUSTOM_KEEP = 4096  # bytes of fd-6 text kept (the reply uses the first 255, like qmail.c)
_CUSTOM_DRAIN = 65536  # stop reading fd 6 after this much: a runaway writer gets EPIPE
_EOF_GRACE_S = 0.5  # after the exit, how long pipes held open by grandchildren may delay us
_REAP_S = 5.0  # after SIGKILL, how long to wait for the exit status
_REAP_POLLS = 50  # when cancelled: poll waitpid this many times, 2 ms apart
_CD_EXEC = 'cd -- "$1" || exit 61; shift; exec "$@"'  # qmail.c: chdir fails → _exit(61)


@dataclass(frozen=True, slots=True)
class QueueResult:
    """How one qmail-queue run ended and the DATA reply qmail-smtpd would give for it.

    exit_code: the exit status; -N when killed by signal N; 120 when the program could not be
    executed (qmail.c's child uses that status); 52 when we killed it at the timeout
    (`timed_out` True); 54 when it exited 0 without taking the whole message and envelope
    (`input_complete` False: qmail.c answers "qq read error" then). So exit_code == 0 exactly
    when the message was queued. `pid` is the qp of the 250 reply (0 when nothing ran).
    """

    exit_code: int
    reply: Reply
    custom_text: bytes
    pid: int
    timed_out: bool = False
    input_complete: bool = True

    @property
    def queued(self) -> bool:
        return self.reply.code == 250


async def run_qmail_queue(
    program: Sequence[str],
    message: Message,
    sender: str,
    rcpts: Sequence[str],
    *,
    timeout_s: float,
    clock: Clock,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    custom_fd: bool = True,
) -> QueueResult:
    """Feed `message` and the envelope to `program` and map its exit to a reply.

    Never raises for anything the program does (missing, crashing, hanging, not reading);
    the whole run is bounded by `timeout_s` plus a short grace. TemporaryError when we cannot
    create pipes; ValueError for an empty `program` or a NUL in an address. If cancelled,
    the program is killed and reaped.
    """
    if not program:
        raise ValueError("empty qmail-queue command")
    envelope = encode(sender, rcpts)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    fds = _Fds()
    try:
        try:
            msg_r, msg_w = fds.pipe()
            env_r, env_w = fds.pipe()
            moves = [(msg_r, 0), (env_r, 1)]
            custom_r = -1
            if custom_fd:
                custom_r, custom_w = fds.pipe()
                moves.append((custom_w, CUSTOM_FD))
            # O_NONBLOCK belongs to the open file description, which dup2 shares: set it on
            # our ends only, or the program would get EAGAIN from its fd 0 and fd 1.
            for fd in (msg_w, env_w, custom_r):
                if fd >= 0:
                    os.set_blocking(fd, False)
        except OSError as e:  # EMFILE and the like: ours, not the program's (qmail: 451 qq temp)
            raise TemporaryError(f"qmail-queue: cannot create pipes: {e}") from e
        try:
            pid = _spawn(program, env, cwd, moves)
        except OSError:
            return QueueResult(EX_EXEC_FAILED, reply_for_exit(EX_EXEC_FAILED), b"", 0)
        finally:
            for child_end, _ in moves:
                fds.close(child_end)
        return await _converse(
            loop,
            clock,
            pid,
            fds=fds,
            msg=(msg_w, as_body(message)),
            env=(env_w, envelope),
            custom_r=custom_r,
            deadline=deadline,
        )
    finally:
        fds.close_all()


async def _converse(
    loop: asyncio.AbstractEventLoop,
    clock: Clock,
    pid: int,
    *,
    fds: _Fds,
    msg: tuple[int, Body],
    env: tuple[int, bytes],
    custom_r: int,
    deadline: float,
) -> QueueResult:
    """Write, read fd 6 and wait for the exit concurrently, so nothing can deadlock."""
    custom = bytearray()
    feeder = asyncio.create_task(_feed(loop, fds, msg, env))
    tasks: list[asyncio.Future[Any]] = [feeder]
    if custom_r >= 0:
        tasks.append(asyncio.create_task(_read_custom(loop, custom_r, custom)))
    waiter = asyncio.create_task(_wait(pid))
    try:
        await asyncio.wait({waiter}, timeout=max(0.0, deadline - loop.time()))
        if not waiter.done():
            _kill(pid)
            await asyncio.wait({waiter}, timeout=_REAP_S)
            timeout = reply_for_exit(EX_TIMEOUT)
            return QueueResult(EX_TIMEOUT, timeout, bytes(custom), pid, timed_out=True)
        code = waiter.result()
        # The program is gone; pipes only stay open if it left children holding them.
        await asyncio.wait(tasks, timeout=_EOF_GRACE_S)
        complete = feeder.done() and feeder.result()
        text = bytes(custom)
        if code == EX_OK and not complete:
            # qmail.c: "case 0: if (!qq->flagerr) return ""; /* fall through */ case 54:".
            read_error = reply_for_exit(EX_READ_ERROR)
            return QueueResult(EX_READ_ERROR, read_error, text, pid, input_complete=False)
        reply = accepted_reply(clock.now(), pid) if code == EX_OK else reply_for_exit(code, text)
        return QueueResult(code, reply, text, pid, input_complete=complete)
    finally:
        reaped = waiter.done()
        pending = [t for t in (*tasks, waiter) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            # Let them unregister their fds from the loop before the caller closes the fds:
            # a late remove_reader() could hit a reused fd number. They end at once.
            await asyncio.wait(pending)
        if not reaped:
            # Cancelled, or not reaped within _REAP_S of SIGKILL: never leave it running.
            _kill(pid)
            _reap_briefly(pid)


class _Fds:
    """The pipe ends this run owns; closing is idempotent."""

    def __init__(self) -> None:
        self._open: set[int] = set()

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        self._open.update((r, w))
        return self._high(r), self._high(w)

    def _high(self, fd: int) -> int:
        # Keep every dup2 source above the targets 0, 1 and 6 (see the module docstring).
        if fd > 9:
            return fd
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        self._open.add(new)
        self.close(fd)
        return new

    def close(self, fd: int) -> None:
        if fd in self._open:
            self._open.discard(fd)
            os.close(fd)

    def close_all(self) -> None:
        for fd in list(self._open):
            self.close(fd)


def _spawn(
    program: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    moves: list[tuple[int, int]],
) -> int:
    environ = dict(os.environ if env is None else env)
    path = _resolve(program[0], environ, cwd)
    argv = list(program)
    if cwd is not None:
        argv = ["/bin/sh", "-c", _CD_EXEC, "mailguard-qq", os.path.abspath(cwd), path, *argv[1:]]
        path = "/bin/sh"
    return os.posix_spawn(
        path,
        argv,
        environ,
        file_actions=[(os.POSIX_SPAWN_DUP2, src, dst) for src, dst in moves],
        # Python ignores SIGPIPE and SIGXFSZ; give the program the defaults (as subprocess's
        # restore_signals does) and an empty signal mask.
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        setsigmask=(),
    )


def _resolve(name: str, environ: Mapping[str, str], cwd: str | None) -> str:
    """execv semantics for names with "/" (relative to `cwd`), a PATH search otherwise."""
    if "/" in name:
        path = os.path.join(cwd, name) if cwd is not None else name
    else:
        found = shutil.which(name, path=environ.get("PATH", os.defpath))
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "not found in PATH", name)
        path = found
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, "not an executable file", path)
    return path


async def _feed(
    loop: asyncio.AbstractEventLoop, fds: _Fds, msg: tuple[int, Body], env: tuple[int, bytes]
) -> bool:
    """Message, close fd 0, envelope, close fd 1 (qmail_from/qmail_close). After a write error
    the envelope is not written (qmail_put skips once flagerr is set). True if all went.
    A spooled message is streamed from its file, a piece at a time."""
    fd, body = msg
    ok = True
    try:
        async with contextlib.aclosing(body.stream()) as pieces:
            async for piece in pieces:
                if not await _write_all(loop, fd, piece):
                    ok = False
                    break
    except OSError:  # the spool file failed to read: end fd 0 without the envelope, so
        ok = False  # qmail-queue refuses (qmail.c: "qq read error"), never queues a part
    fds.close(fd)
    if ok:
        ok = await _write_all(loop, *env)
    fds.close(env[0])
    return ok


async def _write_all(loop: asyncio.AbstractEventLoop, fd: int, data: bytes | memoryview) -> bool:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _ready(loop, fd, write=True)
        except OSError:  # EPIPE: the program closed its end; its exit status decides
            return False
    return True


async def _read_custom(loop: asyncio.AbstractEventLoop, fd: int, out: bytearray) -> None:
    total = 0
    while total < _CUSTOM_DRAIN:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            await _ready(loop, fd, write=False)
            continue
        except OSError:
            return
        if not chunk:
            return
        total += len(chunk)
        out += chunk[: max(0, _CUSTOM_KEEP - len(out))]


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await fut
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def _wait(pid: int) -> int:
    """The exit code of our child (-N for signal N), reaped without blocking the loop."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1
    try:
        if pidfd >= 0:
            await _ready(asyncio.get_running_loop(), pidfd, write=False)
        delay = 0.001
        # A readable pidfd means a zombie, so the first non-blocking poll normally succeeds.
        while (code := _poll_exit(pid)) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
    except ChildProcessError:
        return EX_WAITPID_SURPRISE  # someone else reaped it (qmail.c: "qq waitpid surprise")
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    return code


def _poll_exit(pid: int) -> int | None:
    """waitpid(WNOHANG): the exit code once the child has ended, else None."""
    done, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _reap_briefly(pid: int) -> None:
    """Reap right after SIGKILL without awaiting (we may be cancelled): a killed process is
    gone within milliseconds; one stuck in the kernel is left as a zombie, never waited on."""
    for _ in range(_REAP_POLLS):
        try:
            if _poll_exit(pid) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(0.002)
