#!/usr/bin/env python3
"""Start-up cost of `mailguard smtpd` (the per-connection drop-in for qmail-smtpd).

For each way of starting it — the `mailguard smtpd` console script, `python3 -m
mailguard.lean.smtpd`, the qmail-hooks/qmail-smtpd shim (`python3 -I -S`), and with a C
compiler the compiled shim (contrib/shim, built into a temporary directory) behind the
same sh script and started directly — a short
session is run on one end of a socketpair (as tcpserver gives fd 0 = fd 1 = the
connection): time from spawn to the `220` greeting, then QUIT; the CPU time of the
process (getrusage of the child: the daemon's share is not counted) is set beside that
of a bare `python3 -c pass` (and `python3 -S -c pass`).

    python3 bench/smtpd_startup.py [RUNS]
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _daemon import ROOT, python_pass, readable, running_daemon, spawn, stats, wait_cpu


def session(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(seconds to greeting, seconds for the whole session, CPU seconds of the process)."""
    ours, theirs = socket.socketpair()
    t = time.perf_counter()
    pid = spawn(argv, env, {0: theirs.fileno(), 1: theirs.fileno()})
    theirs.close()
    with ours:
        readable(ours.fileno())
        greeting = ours.recv(512)
        t_greeting = time.perf_counter() - t
        assert greeting.startswith(b"220 "), greeting
        ours.sendall(b"QUIT\r\n")
        while ours.recv(512):
            pass
    code, cpu = wait_cpu(pid)
    assert code == 0, code
    return t_greeting, time.perf_counter() - t, cpu


def shims(tmp: Path) -> dict[str, list[str]]:
    """The sh shim without the compiled one next to it (the Python path), and — when
    contrib/shim/build.sh finds a compiler — with it, and the compiled one alone."""
    sh = ROOT / "qmail-hooks" / "qmail-smtpd"
    python_only, native = tmp / "python" / "qmail-hooks", tmp / "native" / "qmail-hooks"
    for d in (python_only, native):
        d.mkdir(parents=True)
        shutil.copy2(sh, d / "qmail-smtpd")
    out = {"qmail-hooks/qmail-smtpd (-I -S)": [str(python_only / "qmail-smtpd")]}
    binary = native / "bin" / "mailguard-smtpd"
    built = subprocess.run([str(ROOT / "contrib" / "shim" / "build.sh"), str(binary)],
                           capture_output=True, text=True, check=False)
    if built.returncode != 0:
        print(f"compiled shim left out: {built.stderr.strip()}")
        return out
    out["qmail-hooks/qmail-smtpd (compiled)"] = [str(native / "qmail-smtpd")]
    out["bin/mailguard-smtpd (directly)"] = [str(binary)]
    return out


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    console = shutil.which("mailguard", path=os.path.dirname(sys.executable)) or "mailguard"
    scratch = tempfile.TemporaryDirectory(prefix="mgshims")
    variants = {
        "mailguard smtpd (console script)": [console, "smtpd"],
        "python3 -m mailguard.lean.smtpd": [sys.executable, "-m", "mailguard.lean.smtpd"],
        **shims(Path(scratch.name)),
    }
    wall, cpu = python_pass(runs)
    wall_s, cpu_s = python_pass(runs, "-S")
    base_cpu = sorted(cpu)[len(cpu) // 2]
    print(f"{runs} runs each; python {sys.version.split()[0]} at {sys.executable}")
    print(f"{'python3 -c pass':36} wall {stats(wall)}   cpu {stats(cpu)}")
    print(f"{'python3 -S -c pass':36} wall {stats(wall_s)}   cpu {stats(cpu_s)}")
    with running_daemon('[delivery]\nmethod = "maildir"\nspool = "{tmp}/spool"') as tmp:
        env = {**os.environ, "MAILGUARD_CONTROL": str(tmp / "control.sock"),
               "MAILGUARD_PYTHON": sys.executable, "MAILGUARD_LIB": str(ROOT),
               "TCPREMOTEIP": "127.0.0.1"}
        for name, argv in variants.items():
            session(argv, env)  # warm the page cache
            greet, total, cpus = [], [], []
            for _ in range(runs):
                g, t, c = session(argv, env)
                greet.append(g)
                total.append(t)
                cpus.append(c)
            median_cpu = sorted(cpus)[len(cpus) // 2]
            print(f"{name:36} to 220 {stats(greet)}   session {stats(total)}   "
                  f"cpu {stats(cpus)}  = {median_cpu / base_cpu:.2f}x python3 -c pass")
    scratch.cleanup()


if __name__ == "__main__":
    main()
