"""`mailguard web --listen HOST:PORT` serves on that address (the flag is the web's own,
not the daemon's server.listen)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.daemon_harness import upgrade_store


def test_listen_flag(tmp_path: Path) -> None:
    store = f"sqlite+aiosqlite:///{tmp_path}/mailguard.db"
    upgrade_store(store)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mailguard.cli.main", "web", "--store",
                             store, "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert r.status_code == 200 and "password" in r.text
    finally:
        proc.terminate()
        proc.wait(15)
        if proc.stderr is not None:
            proc.stderr.close()
