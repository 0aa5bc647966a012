"""A throw-away `mailguard serve` for the benchmarks (temporary config, store, socket)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDER = ROOT / "tests" / "tools" / "recording_qmail_queue.py"


@contextmanager
def running_daemon(delivery: str) -> Iterator[Path]:
    """Yield the temporary directory (control socket: <dir>/control.sock)."""
    with tempfile.TemporaryDirectory(prefix="mgbench") as name:
        tmp = Path(name)
        cfg = tmp / "mailguard.toml"
        cfg.write_text(
            '[server]\nlisten = ["127.0.0.1:0"]\nhostname = "mx.test"\n'
            'local_domains = ["example.com"]\n'
            f"{delivery.replace('{tmp}', str(tmp))}\n"
            f'[control]\nsocket = "{tmp}/control.sock"\n[log]\nlevel = "warning"\n'
        )
        store = f"sqlite+aiosqlite:///{tmp}/mg.db"
        cli = [sys.executable, "-m", "mailguard.cli.main"]
        subprocess.run([*cli, "db", "upgrade", "--store", store], check=True,
                       capture_output=True)
        proc = subprocess.Popen([*cli, "serve", "--config", str(cfg), "--store", store],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while not (tmp / "control.sock").exists():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the daemon did not start")
                time.sleep(0.05)
            yield tmp
        finally:
            proc.terminate()
            proc.wait(30)
            assert proc.stderr is not None
            proc.stderr.close()


def spawn(argv: list[str], env: dict[str, str], fds: dict[int, int]) -> int:
    """posix_spawn with `fds` ({target: source}) placed in the child."""
    actions = [(os.POSIX_SPAWN_DUP2, src, dst) for dst, src in fds.items()]
    return os.posix_spawn(argv[0], argv, env, file_actions=actions)


def wait_cpu(pid: int) -> tuple[int, float]:
    """Exit status and CPU seconds (user + system) of one child."""
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


def readable(fd: int, timeout_s: float = 30.0) -> None:
    if not select.select([fd], [], [], timeout_s)[0]:
        raise SystemExit("no answer")


def stats(values: list[float]) -> str:
    values = sorted(values)
    median = values[len(values) // 2]
    return f"median {median * 1000:6.1f} ms   min {values[0] * 1000:6.1f} ms"


def python_pass(runs: int, *flags: str) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of `python3 [flags] -c pass`."""
    walls, cpus = [], []
    for _ in range(runs):
        t = time.perf_counter()
        pid = spawn([sys.executable, *flags, "-c", "pass"], dict(os.environ), {})
        _, cpu = wait_cpu(pid)
        walls.append(time.perf_counter() - t)
        cpus.append(cpu)
    return walls, cpus


__all__ = ["RECORDER", "ROOT", "python_pass", "readable", "running_daemon", "spawn", "stats",
           "wait_cpu"]
