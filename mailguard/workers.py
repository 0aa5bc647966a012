"""`[server] workers` > 1: a supervisor and N worker processes sharing the listening
sockets (docs/workers.md).

The supervisor binds every listener (SMTP, SMTPS, /metrics, the control socket) and
then forks the workers, before any event loop, store engine or thread exists in it:
each worker runs the whole asyncio daemon (`app.run_daemon`) on the inherited sockets,
with its own store connections, caches and metrics files. The supervisor itself only
waits for signals and for its workers:

- a worker that dies is started again (same index, same sockets), at once after a long
  run, after a growing pause (0.5 s … 30 s) when it keeps dying young;
- SIGTERM / SIGINT: the supervisor closes its copies of the listeners, removes the
  control socket file, and sends SIGTERM to every worker, which drains as the single
  daemon does (`server.shutdown_grace_s`); it exits 0 when all have exited 0;
- SIGHUP is passed on: each worker reloads its configuration.

A worker that fails before the first `event=ready` (a store that does not open…) stops
the start: the supervisor stops the others and exits with that worker's status."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from mailguard.app import keep_restart_only, ready_fields
from mailguard.clock import Clock, SystemClock
from mailguard.config import Config
from mailguard.control.server import ControlError, bind_control
from mailguard.frontend.listeners import Listeners, WorkerSetup, bind_smtp, bind_tcp, describe
from mailguard.frontend.tls import build_tls_context
from mailguard.metrics import prepare_multiprocess_dir, process_dead

log = logging.getLogger("mailguard.supervisor")

STABLE_S = 10.0  # a worker that ran this long is restarted at once
FIRST_PAUSE_S = 0.5  # the pause before restarting a worker that died young, doubled…
MAX_PAUSE_S = 30.0  # …up to this
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
PR_SET_PDEATHSIG = 1  # prctl(2)

# runs the daemon in a worker process and returns its exit status (cli.main's `serve`)
RunWorker = Callable[[Config, WorkerSetup], int]


def worker_count(setting: int, cpus: int | None) -> int:
    """`[server] workers`: the number itself, or one per core for 0."""
    return setting if setting > 0 else max(1, cpus or 1)


def restart_pause(lived_s: float, last_pause_s: float) -> float:
    """Seconds to wait before restarting a worker that died after `lived_s` seconds,
    when its slot's last restart waited `last_pause_s`: none after a long run, else
    twice the last pause (at least FIRST_PAUSE_S, at most MAX_PAUSE_S)."""
    if lived_s >= STABLE_S:
        return 0.0
    return min(MAX_PAUSE_S, max(FIRST_PAUSE_S, 2 * last_pause_s))


@dataclass
class _Slot:
    index: int
    pid: int = 0  # 0 = not running
    starts: int = 0
    started: float = 0.0
    ready: bool = False
    pause_s: float = 0.0
    restart_at: float | None = None


class Supervisor:
    """Starts `count` workers running `run_worker`, keeps them running, stops them."""

    def __init__(self, config: Config, count: int, run_worker: RunWorker, *,
                 reload_config: Callable[[], Config] | None = None,
                 clock: Clock | None = None) -> None:
        self._config = config
        self._run_worker = run_worker
        self._reload_config = reload_config
        self._clock = clock or SystemClock()
        self._slots = [_Slot(i) for i in range(count)]
        self._listeners = Listeners()
        self._control_inode: tuple[int, int] | None = None
        self._metrics_dir: str | None = None
        self._stopping = False
        self._ready_once = False
        self._failed_start: int | None = None  # exit status of a worker that never served
        self._unclean = False
        self._pipes: list[int] = []

    def run(self) -> int:
        """Bind, fork, supervise until SIGTERM/SIGINT; the exit status. Raises
        ConfigError (a certificate that does not load) and OSError (a port in use)
        before any worker starts."""
        build_tls_context(self._config)  # reported once, here, rather than by each worker
        self._bind()
        sig_r, sig_w = os.pipe()
        ready_r, ready_w = os.pipe()
        self._pipes = [sig_r, sig_w, ready_r, ready_w]
        os.set_blocking(sig_w, False)
        # the handlers stay to the end, then the signals are ignored: a second SIGTERM
        # while the supervisor exits must not kill it (its status is the workers' verdict)
        for s in SIGNALS:
            signal.signal(s, _note)
        signal.set_wakeup_fd(sig_w, warn_on_full_buffer=False)
        try:
            for slot in self._slots:
                self._spawn(slot, ready_w)
            self._loop(sig_r, ready_r, ready_w)
        finally:
            signal.set_wakeup_fd(-1)
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(s, signal.SIG_IGN)
            for fd in self._pipes:
                os.close(fd)
            self._close_listeners()
            if self._metrics_dir is not None:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        if self._failed_start is not None:
            log.error("event=stopped reason=%r", "a worker failed to start")
            return self._failed_start or 1
        log.info("event=stopped workers=%d", len(self._slots))
        return 1 if self._unclean else 0

    # --- start --------------------------------------------------------------------------

    def _bind(self) -> None:
        c = self._config
        self._listeners = bind_smtp(c.server.listen, c.tls.smtps_listen)
        try:
            if c.metrics.listen:
                self._listeners.metrics = bind_tcp(c.metrics.listen, 9125)
                log.info("event=metrics_listening address=%s",
                         describe(self._listeners.metrics[0]))
                self._metrics_dir = tempfile.mkdtemp(prefix="mailguard-metrics.",
                                                     dir=os.environ.get("RUNTIME_DIRECTORY"))
                prepare_multiprocess_dir(self._metrics_dir)
            if c.control.enabled:
                try:
                    self._listeners.control = bind_control(c.control)
                    st = os.stat(c.control.socket)
                    self._control_inode = (st.st_dev, st.st_ino)
                except ControlError as exc:  # as the single daemon: SMTP goes on
                    log.error("event=control_unavailable socket=%s error=%r",
                              c.control.socket, str(exc))
        except BaseException:
            self._close_listeners()
            raise

    def _spawn(self, slot: _Slot, ready_w: int) -> None:
        config = self._fresh_config() if slot.starts else self._config
        supervisor = os.getpid()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:  # the worker: never returns into the supervisor's code
                code = 1
                try:
                    self._become_worker(supervisor)
                    setup = WorkerSetup(slot.index, self._listeners, self._metrics_dir,
                                        lambda: _tell_ready(ready_w))
                    code = self._run_worker(config, setup)
                except BaseException:
                    log.exception("event=worker_crashed worker=%d", slot.index)
                finally:
                    with contextlib.suppress(Exception):
                        sys.stdout.flush()
                        sys.stderr.flush()
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        slot.pid, slot.ready, slot.restart_at = pid, False, None
        slot.started = self._clock.monotonic()
        slot.starts += 1
        log.info("event=worker_started worker=%d pid=%d", slot.index, pid)

    def _fresh_config(self) -> Config:
        """A restarted worker reads the configuration again (what a SIGHUP would have
        given it), keeping what only a restart of the supervisor changes."""
        if self._reload_config is None:
            return self._config
        try:
            return keep_restart_only(self._config, self._reload_config())[0]
        except Exception as exc:
            log.error("event=reload_failed reason=%r error=%r kept=start-up configuration",
                      "worker restart", str(exc) or type(exc).__name__)
            return self._config

    def _become_worker(self, supervisor: int) -> None:
        """In the child: the supervisor's signal handling and pipes are not ours."""
        signal.set_wakeup_fd(-1)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the daemon's loop handles it
        for fd in self._pipes[:3]:  # sig_r, sig_w, ready_r (ready_w is how we report)
            os.close(fd)
        _die_with_parent()
        if os.getppid() != supervisor:  # it died before prctl took effect
            os._exit(0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)

    # --- supervise ----------------------------------------------------------------------

    def _loop(self, sig_r: int, ready_r: int, ready_w: int) -> None:
        pending = b""
        while any(s.pid for s in self._slots) or not self._stopping:
            due = [s.restart_at for s in self._slots if s.restart_at is not None]
            timeout = max(0.0, min(due) - self._clock.monotonic()) if due else None
            readable, _, _ = select.select([sig_r, ready_r], [], [], timeout)
            if sig_r in readable:
                for signum in os.read(sig_r, 512):
                    self._on_signal(signum)
            if ready_r in readable:
                pending += os.read(ready_r, 4096)
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._on_ready(int(line))
            self._reap()
            if self._failed_start is not None and not self._stopping:
                self._stop()
            now = self._clock.monotonic()
            for slot in self._slots:
                if slot.restart_at is not None and slot.restart_at <= now and not self._stopping:
                    try:
                        self._spawn(slot, ready_w)
                    except OSError as exc:  # fork: EAGAIN, ENOMEM; try again later
                        slot.pause_s = restart_pause(0.0, slot.pause_s)
                        slot.restart_at = now + slot.pause_s
                        log.error("event=worker_start_failed worker=%d error=%r "
                                  "restart_in_s=%g", slot.index, str(exc), slot.pause_s)

    def _on_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if not self._stopping:
                log.info("event=shutdown workers=%d", sum(1 for s in self._slots if s.pid))
            self._stop()
        elif signum == signal.SIGHUP:
            log.info("event=reload_requested workers=%d", sum(1 for s in self._slots if s.pid))
            self._signal_workers(signal.SIGHUP)

    def _on_ready(self, pid: int) -> None:
        for slot in self._slots:
            if slot.pid == pid:
                slot.ready = True
        if not self._ready_once and all(s.ready for s in self._slots):
            self._ready_once = True
            pids = ",".join(str(s.pid) for s in self._slots)
            log.info("event=ready workers=%d pids=%s %s", len(self._slots), pids,
                     ready_fields(self._config))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self._slots if s.pid == pid), None)
            if slot is not None:
                self._exited(slot, os.waitstatus_to_exitcode(status))

    def _exited(self, slot: _Slot, code: int) -> None:
        pid, slot.pid = slot.pid, 0
        if self._metrics_dir is not None:
            process_dead(pid, self._metrics_dir)  # its live gauges go, its counts stay
        if self._stopping:
            # a worker stopped by our SIGTERM before its loop handled signals died of it
            if code not in (0, -signal.SIGTERM):
                self._unclean = True
            log.info("event=worker_stopped worker=%d pid=%d status=%d", slot.index, pid, code)
            return
        if not self._ready_once:
            log.error("event=worker_failed worker=%d pid=%d status=%d before=ready",
                      slot.index, pid, code)
            self._failed_start = code if code > 0 else 1
            return
        lived = self._clock.monotonic() - slot.started
        slot.pause_s = restart_pause(lived, slot.pause_s)
        slot.restart_at = self._clock.monotonic() + slot.pause_s
        log.error("event=worker_died worker=%d pid=%d status=%d lived_s=%.1f restart_in_s=%g",
                  slot.index, pid, code, lived, slot.pause_s)

    def _stop(self) -> None:
        """Refuse new connections at once (the listeners close with the last copy), then
        let every worker drain."""
        self._stopping = True
        for slot in self._slots:
            slot.restart_at = None
        self._close_listeners()
        self._signal_workers(signal.SIGTERM)

    def _signal_workers(self, signum: int) -> None:
        for slot in self._slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)

    def _close_listeners(self) -> None:
        self._listeners.close()
        self._listeners = Listeners()
        if self._control_inode is not None:  # removed once, here; never by a worker
            path = self._config.control.socket
            with contextlib.suppress(OSError):
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == self._control_inode:
                    os.unlink(path)
            self._control_inode = None


def supervise(config: Config, count: int, run_worker: RunWorker, *,
              reload_config: Callable[[], Config] | None = None) -> int:
    """Run `count` workers under a supervisor until SIGTERM/SIGINT; the exit status."""
    return Supervisor(config, count, run_worker, reload_config=reload_config).run()


def _note(signum: int, frame: object) -> None:
    """The supervisor's handler: the signal number reaches the loop via the wakeup fd."""


def _tell_ready(fd: int) -> None:
    with contextlib.suppress(OSError):  # the supervisor is gone: PR_SET_PDEATHSIG stops us
        os.write(fd, f"{os.getpid()}\n".encode())


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM (and drains) if its supervisor is killed outright,
    instead of serving on as an orphan nobody restarts or stops."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
