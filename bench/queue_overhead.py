#!/usr/bin/env python3
"""Overhead of the QMAILQUEUE wrapper (`mailguard queue`) over calling the queue program
directly.

The same message and envelope are fed, as qmail-smtpd does (message on fd 0, then the
envelope on fd 1), to (a) the recording qmail-queue (tests/tools/recording_qmail_queue.py)
run directly and (b) the wrapper, whose daemon runs that same recording queue as its
`[delivery] qmail_queue`. Printed: wall time per message for each, the difference (what
the wrapper adds), and the wrapper process's own CPU time (getrusage of the child; the
daemon's and the inner queue's share are not counted), beside `python3 -c pass`.

    python3 bench/queue_overhead.py [RUNS]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _daemon import RECORDER, ROOT, python_pass, running_daemon, spawn, stats, wait_cpu

MESSAGE = b"Subject: bench\n\n" + b"x" * 70 + b"\n" * 200
ENVELOPE = b"Fa@example.org\0Tb@example.com\0\0"


def feed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process) for one message."""
    msg_r, msg_w = os.pipe()
    env_r, env_w = os.pipe()
    t = time.perf_counter()
    pid = spawn(argv, env, {0: msg_r, 1: env_r})
    os.close(msg_r)
    os.close(env_r)
    for fd, data in ((msg_w, MESSAGE), (env_w, ENVELOPE)):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.close(fd)
    code, cpu = wait_cpu(pid)
    assert code == 0, f"{argv[0]} exited {code}"
    return time.perf_counter() - t, cpu


def measure(argv: list[str], env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    feed(argv, env)  # warm up
    walls, cpus = [], []
    for _ in range(runs):
        w, c = feed(argv, env)
        walls.append(w)
        cpus.append(c)
    return walls, cpus


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    with tempfile.TemporaryDirectory(prefix="mgrec") as rec:
        inner_env = {**os.environ, "RECORD_DIR": rec}
        inner = Path(rec) / "inner-qq"
        inner.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{RECORDER}"\n')
        inner.chmod(0o755)
        delivery = f'[delivery]\nmethod = "qmail-queue"\nqmail_queue = "{inner}"'
        direct_argv = [sys.executable, str(RECORDER)]
        console = shutil.which("mailguard", path=os.path.dirname(sys.executable)) or "mailguard"
        wall, cpu = python_pass(runs)
        print(f"{runs} runs each; python {sys.version.split()[0]}; message {len(MESSAGE)} bytes")
        print(f"{'python3 -c pass':34} wall {stats(wall)}   cpu {stats(cpu)}")
        d_wall, d_cpu = measure(direct_argv, inner_env, runs)
        print(f"{'recording qmail-queue, directly':34} wall {stats(d_wall)}   cpu {stats(d_cpu)}")
        os.environ["RECORD_DIR"] = rec  # the daemon (and so its inner queue) inherits it
        with running_daemon(delivery) as tmp:
            env = {**os.environ, "MAILGUARD_CONTROL": str(tmp / "control.sock"),
                   "MAILGUARD_PYTHON": sys.executable}
            variants = {
                "mailguard queue (console script)": [console, "queue"],
                "python3 -m mailguard.lean.queue": [sys.executable, "-m", "mailguard.lean.queue"],
                "qmail-hooks/qmail-queue (-I -S)": [str(ROOT / "qmail-hooks" / "qmail-queue")],
            }
            for name, argv in variants.items():
                w, c = measure(argv, env, runs)
                print(f"{name:34} wall {stats(w)}   cpu {stats(c)}   "
                      f"adds {(median(w) - median(d_wall)) * 1000:+.1f} ms wall, "
                      f"own cpu = {median(c) / median(cpu):.2f}x python3 -c pass")


if __name__ == "__main__":
    main()
