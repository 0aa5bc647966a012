"""Throughput of `mailguard serve`: messages per second through real SMTP sessions.

Starts the daemon (Maildir spool or the recording qmail-queue, SQLite store in a temp
dir), then sends MESSAGES messages over SESSIONS concurrent connections, each session
sending its share back to back (MAIL, RCPT, DATA per message, one connection reused), and
a second run with a new connection per message. Prints figures; asserts nothing.

    python3 bench/daemon_throughput.py [--messages 2000] [--sessions 8] [--size 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line or line[3:4] != b"-":
            return line


async def _session(host: str, port: int, count: int, body: bytes, reuse: bool) -> int:
    sent = 0
    reader = writer = None
    for _ in range(count):
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
            await _reply(reader)
            writer.write(b"EHLO bench.test\r\n")
            await _reply(reader)
        assert reader is not None
        writer.write(b"MAIL FROM:<bench@example.org>\r\nRCPT TO:<sink@example.com>\r\nDATA\r\n")
        for _ in range(3):
            await _reply(reader)
        writer.write(body + b".\r\n")
        if (await _reply(reader)).startswith(b"250"):
            sent += 1
        if not reuse:
            writer.write(b"QUIT\r\n")
            await _reply(reader)
            writer.close()
            await writer.wait_closed()
            writer = None
    if writer is not None:
        writer.write(b"QUIT\r\n")
        writer.close()
    return sent


async def _run(host: str, port: int, messages: int, sessions: int, body: bytes, *,
               reuse: bool) -> tuple[int, float]:
    share = [messages // sessions + (1 if i < messages % sessions else 0) for i in range(sessions)]
    started = time.perf_counter()
    done = await asyncio.gather(*(_session(host, port, n, body, reuse) for n in share))
    return sum(done), time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--size", type=int, default=2000, help="body bytes per message")
    ap.add_argument("--delivery", choices=["maildir", "qmail-queue"], default="maildir")
    args = ap.parse_args()
    body = b"Subject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * max(1, args.size // 78)
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite+aiosqlite:///{tmp}/bench.db"
        py = sys.executable
        subprocess.run([py, "-m", "mailguard.cli.main", "db", "upgrade", "--store", store],
                       check=True, capture_output=True)
        target = (["--spool", f"{tmp}/spool"] if args.delivery == "maildir" else
                  ["--qmail-queue", str(ROOT / "tests/tools/recording_qmail_queue.py")])
        env = {**os.environ, "RECORD_DIR": tmp}
        port = _free_port()
        proc = subprocess.Popen(
            [py, "-m", "mailguard.cli.main", "serve", "--listen", f"127.0.0.1:{port}",
             "--domain", "example.com", "--store", store, "--log-level", "warning", *target],
            stderr=subprocess.DEVNULL, env=env,
        )
        try:
            _wait_port(port)
            for reuse in (True, False):
                ok, secs = asyncio.run(_run("127.0.0.1", port, args.messages, args.sessions,
                                            body, reuse=reuse))
                mode = "reused connections" if reuse else "one connection per message"
                print(f"{args.delivery}: {ok}/{args.messages} messages, {args.sessions} sessions, "
                      f"{mode}: {secs:.2f} s = {ok / secs:.0f} msg/s")
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("daemon did not start")


if __name__ == "__main__":
    sys.exit(main())
