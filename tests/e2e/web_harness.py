"""The real `mailguard web` process on a real store (SQLite file in the test's directory
unless a URL is given), with mail accounts made by `mailguard account passwd`; driven
over HTTP by httpx. Used by test_web.py and test_web_admin.py."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.e2e.daemon_harness import upgrade_store

PASSWORD = "correct horse battery"
CONFIG = """
[server]
hostname = "mx.test"
[web]
listen = "127.0.0.1:{port}"
cookie_secure = {secure}
max_failures_per_account = 3
"""


def cli(store: str, *args: str, stdin: str | None = None,
        config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`mailguard ARGS --store STORE` (and --config when given)."""
    extra = ["--config", str(config)] if config is not None else []
    return subprocess.run([sys.executable, "-m", "mailguard.cli.main", *args, "--store",
                           store, *extra], input=stdin, text=True, capture_output=True,
                          timeout=60, check=False)


class Web:
    def __init__(self, tmp: Path, *, secure: bool = False,
                 users: Sequence[str] = ("joe@example.com", "ann@example.com"),
                 extra_config: str = "", store: str | None = None) -> None:
        self.store = store or f"sqlite+aiosqlite:///{tmp}/mailguard.db"
        upgrade_store(self.store)
        for user in users:
            res = cli(self.store, "account", "passwd", user, stdin=PASSWORD)
            assert res.returncode == 0, res.stderr
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.config = tmp / "web.toml"
        self.config.write_text(CONFIG.format(port=self.port,
                                             secure="true" if secure else "false")
                               + extra_config)
        self.log_path = tmp / "web.log"  # a file, not a pipe: a long test never blocks it
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailguard.cli.main", "web", "--config",
                 str(self.config), "--store", self.store],
                stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("mailguard web did not start")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", follow_redirects=False)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return cli(self.store, *args, stdin=stdin, config=self.config)

    def logged(self) -> str:
        """What the server has logged so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> str:
        """Stop the server (once) and return everything it logged."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        return self.logged()


def csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def login(c: httpx.Client, user: str = "joe@example.com",
          password: str = PASSWORD) -> httpx.Response:
    token = csrf(c.get("/login").text)
    return c.post("/login", data={"csrf": token, "address": user, "password": password})
