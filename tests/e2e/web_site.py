"""A real site for web tests: the daemon (real clamd and spamd, Maildir spool, a
quarantine) plus `mailguard web` on the same configuration and store, and three mail
users (joe, ann, boss @example.com) whose domain has spam filtering on."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.e2e.daemon_harness import Daemon, start_daemon

PASSWORD = "correct horse battery"

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com", "other.test"]
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{tmp}/spool"

[clamd]
enabled = true
servers = [CLAMD]
scan_timeout_s = 20

[spamd]
servers = [SPAMD]
timeout_s = 20

[quarantine]
directory = "{tmp}/quarantine"
viruses = true

[web]
listen = "127.0.0.1:WEBPORT"
cookie_secure = false
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(d: Daemon, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailguard.cli.main", *args, "--config",
         str(d.tmp / "mailguard.toml"), "--store", store_url(d)],
        input=stdin, capture_output=True, text=True, timeout=60, check=False)


def store_url(d: Daemon) -> str:
    return f"sqlite+aiosqlite:///{d.tmp}/mailguard.db"


class Site:
    def __init__(self, d: Daemon, port: int) -> None:
        self.daemon = d
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailguard.cli.main", "web", "--config",
             str(d.tmp / "mailguard.toml"), "--store", store_url(d)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("mailguard web did not start")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, follow_redirects=False)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        assert self.proc.stderr is not None
        text = self.proc.stderr.read().decode()
        self.proc.stderr.close()
        return text


def run_site(tmp: Path, clamd_socket: str, spamd_addr: tuple[str, int]) -> Iterator[Site]:
    """Start everything in `tmp`, yield the site, stop it (the daemon must exit 0)."""
    port = free_port()
    text = CONFIG.replace("CLAMD", f'"unix:{clamd_socket}"').replace(
        "SPAMD", f'"{spamd_addr[0]}:{spamd_addr[1]}"').replace("WEBPORT", str(port))
    d = start_daemon(tmp, text)
    for user in ("joe@example.com", "ann@example.com", "boss@example.com"):
        res = cli(d, "account", "passwd", user, stdin=PASSWORD)
        assert res.returncode == 0, res.stderr
    res = cli(d, "domain", "spam", "on", "example.com")
    assert res.returncode == 0, res.stderr
    s = Site(d, port)
    yield s
    s.stop()
    assert d.stop() == 0


