#!/usr/bin/env python3
"""The scan path (issue 13): messages per second through the daemon with spamd scanning
every recipient, next to `spamc` alone against the same spamd at the same concurrency
(the ceiling: spamd's own throughput). Target: at least 0.9 times spamc.

Needs a running spamd (`--spamd HOST:PORT`, default $MAILGUARD_TEST_SPAMD_TCP from
contrib/test-services.sh) and spamc; the daemon is started here (Maildir spool, SQLite
store, the recipients' domain with spam filtering on).

    .venv/bin/python bench/scan_path.py [--messages 200] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONFIG = """
[server]
listen = ["127.0.0.1:{port}"]
hostname = "mx.bench"
local_domains = ["example.com"]
[delivery]
method = "maildir"
spool = "{tmp}/spool"
[spamd]
servers = ["{spamd}"]
max_parallel = 4
[control]
enabled = false
"""
BODY = "\r\n".join(f"Line {i}: a perfectly ordinary message about the meeting." for i in
                   range(60))
MESSAGE = f"From: a@example.org\r\nTo: u@example.com\r\nSubject: notes\r\n\r\n{BODY}\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rate(n: int, concurrency: int, one: object) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))  # type: ignore[arg-type]
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--spamd", default=os.environ.get("MAILGUARD_TEST_SPAMD_TCP", ""))
    args = ap.parse_args()
    if not args.spamd or not shutil.which("spamc"):
        raise SystemExit("needs spamd (--spamd HOST:PORT) and spamc")
    host, _, sport = args.spamd.rpartition(":")

    def spamc(_i: int) -> None:
        subprocess.run(["spamc", "-d", host, "-p", sport, "-u", "u@example.com", "-c"],
                       input=MESSAGE.encode(), capture_output=True, check=False)

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cfg = Path(tmp) / "mailguard.toml"
        cfg.write_text(CONFIG.format(port=port, tmp=tmp, spamd=args.spamd))
        store = f"sqlite+aiosqlite:///{tmp}/mg.db"
        main_cmd = [sys.executable, "-m", "mailguard.cli.main"]
        subprocess.run([*main_cmd, "db", "upgrade", "--store", store], check=True,
                       capture_output=True)
        subprocess.run([*main_cmd, "domain", "spam", "on", "example.com", "--store", store,
                        "--config", str(cfg)], check=True, capture_output=True)
        proc = subprocess.Popen([*main_cmd, "serve", "--config", str(cfg), "--store", store],
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

            def smtp(_i: int) -> None:
                with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
                    s.sendmail("a@example.org", ["u@example.com"], MESSAGE)

            spamc(0)
            smtp(0)  # warm both
            ceiling = rate(args.messages, args.concurrency, spamc)
            ours = rate(args.messages, args.concurrency, smtp)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"{args.messages} messages, {args.concurrency} at once")
    print(f"spamc -> spamd alone:              {ceiling:7.1f} msg/s")
    print(f"SMTP -> mailguard (spamd) -> spool: {ours:7.1f} msg/s  ({ours / ceiling:.2f}x)")


if __name__ == "__main__":
    main()
