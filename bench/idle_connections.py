#!/usr/bin/env python3
"""10,000 idle SMTP connections (issue 13): the daemon's memory with them open, and
whether a new client is still served (time to its greeting and to a whole message).

Starts its own daemon (Maildir spool, SQLite store, `max_connections` and
`max_connections_per_ip` raised to hold them; the client addresses are spread over
127.0.0.0/8 so that per-IP limits stay realistic), opens the connections from
127.0.<n>.<m> with their greetings read, then measures; the target is ≤ 300 MB RSS.

    .venv/bin/python bench/idle_connections.py [--connections 10000]
"""

from __future__ import annotations

import argparse
import resource
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
[server]
listen = ["127.0.0.1:{port}"]
hostname = "mx.bench"
local_domains = ["example.com"]
max_connections = {limit}
max_connections_per_ip = 20
timeout_s = 1200
[delivery]
method = "maildir"
spool = "{tmp}/spool"
[control]
enabled = false
"""


def rss_mb(pid: int) -> float:
    total = 0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total / 1024


def children(pid: int) -> list[int]:
    try:
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    return [int(c) for c in out]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=10_000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 1000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cfg = Path(tmp) / "mailguard.toml"
        cfg.write_text(CONFIG.format(port=port, tmp=tmp, limit=args.connections + 100))
        store = f"sqlite+aiosqlite:///{tmp}/mg.db"
        subprocess.run([sys.executable, "-m", "mailguard.cli.main", "db", "upgrade",
                        "--store", store], check=True, capture_output=True)
        proc = subprocess.Popen([sys.executable, "-m", "mailguard.cli.main", "serve",
                                 "--config", str(cfg), "--store", store],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the daemon did not start") from None
                    time.sleep(0.1)
            time.sleep(0.5)
            base = rss_mb(proc.pid)
            socks: list[socket.socket] = []
            t = time.perf_counter()
            for i in range(args.connections):
                s = socket.socket()
                s.bind((f"127.0.{1 + i // 20 // 250}.{1 + i // 20 % 250}", 0))
                s.connect(("127.0.0.1", port))
                socks.append(s)
            for s in socks:
                s.settimeout(30)
                assert s.recv(512).startswith(b"220 ")
            opened = time.perf_counter() - t
            time.sleep(1)
            held = rss_mb(proc.pid)
            t = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", port, timeout=30,
                              source_address=("127.1.0.1", 0)) as smtp:
                greeting = time.perf_counter() - t
                smtp.sendmail("a@example.org", ["postmaster@example.com"],
                              "Subject: hi\r\n\r\nstill served\r\n")
            whole = time.perf_counter() - t
            print(f"daemon RSS idle: {base:.0f} MB; with {len(socks)} idle connections: "
                  f"{held:.0f} MB ({(held - base) * 1024 / len(socks):.1f} KB each); "
                  f"opened and greeted in {opened:.1f}s")
            print(f"a new client meanwhile: greeting after {greeting * 1000:.0f} ms, "
                  f"message accepted after {whole * 1000:.0f} ms")
            for s in socks:
                s.close()
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
