"""Run the real `mailguard serve` as a subprocess and talk to it over real sockets."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LISTENING = re.compile(rb"event=listening address=\[?([0-9a-fA-F.:]+)\]?:(\d+)")
ROOT = Path(__file__).resolve().parents[2]
RECORDER = ROOT / "tests" / "tools" / "recording_qmail_queue.py"


def mailguard_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailguard.cli.main", *args]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mailguard_cmd(*args), capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})}, check=False,
    )


@dataclass
class Daemon:
    """A running daemon: its process, the bound addresses and its collected log."""

    proc: subprocess.Popen[bytes]
    addresses: list[tuple[str, int]]
    tmp: Path
    log: bytearray = field(default_factory=bytearray)

    @property
    def host(self) -> str:
        return self.addresses[0][0]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    @property
    def spool(self) -> Path:
        return self.tmp / "spool"

    @property
    def control(self) -> Path:
        """The control socket (start_daemon's default: in the daemon's tmp directory)."""
        return self.tmp / "control.sock"

    def read_log(self, wait_s: float = 0.0) -> str:
        """Everything logged so far (waits up to `wait_s` for more)."""
        assert self.proc.stderr is not None
        if self.proc.stderr.closed:
            return self.log.decode("utf-8", "replace")
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + wait_s
        while True:
            left = max(0.0, deadline - time.monotonic())
            if not sel.select(left):
                break
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            if not chunk:
                break
            self.log += chunk
        sel.close()
        return self.log.decode("utf-8", "replace")

    def wait_log(self, needle: str, timeout_s: float = 5.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.read_log(0.05)
            if needle in text:
                return text
        raise AssertionError(f"{needle!r} not logged; log:\n{self.read_log()}")

    def spooled(self, domain: str, user: str) -> list[bytes]:
        new = self.spool / domain / user / "new"
        if not new.is_dir():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir())]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.read_log()
            self.proc.stderr.close()
        return code


def upgrade_store(store_url: str) -> None:
    res = run_cli("db", "upgrade", "--store", store_url)
    assert res.returncode == 0, res.stderr


def start_daemon(tmp: Path, config_toml: str, *, upgrade: bool = True,
                 extra_args: tuple[str, ...] = (), store: str | None = None,
                 program: list[str] | None = None) -> Daemon:
    """Write the config (with `{tmp}` filled in), upgrade the store (default: SQLite in
    `tmp`), start and wait for every listener. `program`: the command instead of
    `python -m mailguard.cli.main` (it gets `serve ...`)."""
    text = config_toml.replace("{tmp}", str(tmp))
    if "[control]" not in text:  # never the system-wide /run/mailguard/control.sock
        text += f'\n[control]\nsocket = "{tmp}/control.sock"\n'
    if "qmailqueue_allowed" not in text:  # drop-in sessions may name the recorder
        text = text.replace("[control]\n", f'[control]\nqmailqueue_allowed = ["{RECORDER}"]\n', 1)
    cfg = tmp / "mailguard.toml"
    cfg.write_text(text)
    store = store or f"sqlite+aiosqlite:///{tmp}/mailguard.db"
    if upgrade:
        upgrade_store(store)
    proc = subprocess.Popen(
        [*(program or mailguard_cmd()), "serve", "--config", str(cfg), "--store", store,
         *extra_args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    daemon = Daemon(proc, [], tmp)
    expected = len(tomllib.loads(text).get("server", {}).get("listen", ["default"]))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        log = daemon.read_log(0.05).encode()
        found = LISTENING.findall(log)
        if len(found) >= expected and b"event=ready" in log:
            daemon.addresses = [(h.decode(), int(p)) for h, p in found]
            return daemon
    daemon.stop()
    raise AssertionError(f"daemon did not start; log:\n{daemon.read_log()}")


class Client:
    """A raw SMTP client: exact bytes in, exact replies out."""

    def __init__(self, host: str, port: int, *, source: str | None = None,
                 timeout_s: float = 10.0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        try:
            if source:
                self.sock.bind((source, 0))
            self.sock.connect((host, port))
        except OSError:
            self.sock.close()
            raise
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One complete (possibly multi-line) reply, CRLFs included; b"" on EOF."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    rest, self.buf = self.buf, b""
                    return out + rest
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            out += line + b"\r\n"
            if len(line) < 4 or line[3:4] != b"-":
                return out

    def cmd(self, line: str | bytes) -> bytes:
        data = line.encode() if isinstance(line, str) else line
        self.send(data + b"\r\n")
        return self.reply()

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False

    def transaction(self, sender: str, rcpts: list[str], body: bytes) -> list[bytes]:
        replies = [self.cmd(f"MAIL FROM:<{sender}>")]
        replies += [self.cmd(f"RCPT TO:<{r}>") for r in rcpts]
        replies.append(self.cmd("DATA"))
        if replies[-1].startswith(b"354"):
            self.send(body + b".\r\n")
            replies.append(self.reply())
        return replies


def body(subject: str, extra: bytes = b"") -> bytes:
    """A small RFC 5322 message with CRLF line ends (without the final dot)."""
    return (
        f"From: a@example.org\r\nTo: b@example.com\r\nSubject: {subject}\r\n\r\n".encode()
        + extra
        + b"hello\r\n"
    )


def codes(replies: list[bytes]) -> list[int]:
    return [int(r[:3]) for r in replies]


def iter_lines(text: str, needle: str) -> Iterator[str]:
    return (line for line in text.splitlines() if needle in line)
