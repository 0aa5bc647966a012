"""Fault injection for the reliability suite (issue #12), all over real sockets:

- `FaultyServer`: a TCP endpoint that stands in for a service. In "proxy" mode it forwards
  to the real one (clamd, spamd, PostgreSQL), so working cases use the real service; the
  other modes make it *broken*: "down" (nothing listens: connection refused, existing
  connections reset), "hang" (accepts, reads, never answers; existing connections freeze),
  "garbage" (answers nonsense once the request stopped coming), "garbage_now" (nonsense
  before reading anything), "cut" (reads a little, then resets: died during the scan).
- `FaultyDns`: a UDP resolver in front of rbldnsd: "proxy", "timeout" (drops queries),
  "servfail".
- `QueueProgram`: the daemon's qmail-queue, a shell script whose behaviour is read from a
  file at every run: record (tests/tools/recording_qmail_queue.py), exit N, crash, hang,
  record slowly.
- `FaultTable`: collects one row per case and prints the table at the end of the run.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import RECORDER

Upstream = str | tuple[str, int]  # a unix socket path or (host, port)
MODES = ("proxy", "down", "hang", "garbage", "garbage_now", "cut")


def _rst_close(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0): what the peer sees when a process dies."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultyServer:
    """A service endpoint on 127.0.0.1:<port> whose failure mode the test switches."""

    def __init__(self, upstream: Upstream, name: str) -> None:
        self.upstream = upstream
        self.name = name
        self.mode = "proxy"
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopped = False
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()

    # --- life cycle ------------------------------------------------------------------------

    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self._listener = s
        threading.Thread(target=self._accept_loop, args=(s,), daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        """Switch the failure mode; connections made under the old one are reset (a
        service that recovers is a new process: its old connections are gone), except
        when switching to "hang": they freeze, as with a hung server or a dead link."""
        assert mode in MODES, mode
        with self._lock:
            old, self.mode = self.mode, mode
            if old == mode and not self._stopped:
                return
            if mode == "hang" and not self._stopped:
                return  # existing connections freeze (_pump), they are not closed
            conns, self._conns = self._conns, set()
        for c in conns:
            _rst_close(c)
        if mode == "down" and self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        elif old == "down" and mode != "down":
            self._listen()

    def close(self) -> None:
        self._stopped = True
        self.set_mode("down")

    # --- serving -------------------------------------------------------------------------

    def _track(self, *socks: socket.socket) -> bool:
        with self._lock:
            if self.mode == "down" or self._stopped:
                return False
            self._conns.update(socks)
            return True

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: "down"
            mode = self.mode
            if not self._track(conn):
                _rst_close(conn)
                continue
            threading.Thread(target=self._serve, args=(conn, mode), daemon=True).start()

    def _serve(self, conn: socket.socket, mode: str) -> None:
        try:
            if mode == "proxy":
                self._proxy(conn)
            elif mode == "hang":
                while conn.recv(65536):
                    pass
            elif mode == "garbage_now":
                conn.sendall(b"\x00\xffHELLO? 42 garbage\r\n")
                time.sleep(0.2)
                _rst_close(conn)
            elif mode == "garbage":
                conn.settimeout(0.3)
                with contextlib.suppress(TimeoutError):
                    while conn.recv(65536):
                        pass
                conn.sendall(b"garbage \x01 not a reply\0\r\n\r\n")
                conn.close()
            elif mode == "cut":
                conn.recv(16)
                _rst_close(conn)
        except OSError:
            pass

    def _proxy(self, conn: socket.socket) -> None:
        if isinstance(self.upstream, str):
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = self.upstream
        else:
            up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = self.upstream
        try:
            up.connect(target)
        except OSError:
            up.close()
            _rst_close(conn)
            return
        if not self._track(up):
            up.close()
            return
        threading.Thread(target=self._pump, args=(up, conn), daemon=True).start()
        self._pump(conn, up)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                while self.mode == "hang" and not self._stopped:  # frozen, not closed
                    time.sleep(0.05)
                dst.sendall(chunk)
            dst.shutdown(socket.SHUT_WR)
        except OSError:  # one side died: so does the other (no half-dead connections)
            _rst_close(dst)


class FaultyDns:
    """A UDP resolver for the daemon's [dns] nameservers, in front of rbldnsd."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode = "proxy"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        threading.Thread(target=self._loop, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _loop(self) -> None:
        while True:
            try:
                query, client = self.sock.recvfrom(4096)
            except OSError:
                return
            self.queries += 1
            if self.mode == "timeout" or len(query) < 12:
                continue
            if self.mode == "servfail":
                # header: same id, QR=1, opcode and RD copied, RA=1, RCODE=2; the question
                # echoed, no records
                flags = 0x8000 | (query[2] << 8 & 0x7900) | 0x0080 | 2
                answer = query[:2] + struct.pack(">HHHHH", flags, 1, 0, 0, 0) + query[12:]
                with contextlib.suppress(OSError):
                    self.sock.sendto(answer, client)
                continue
            threading.Thread(target=self._forward, args=(query, client), daemon=True).start()

    def _forward(self, query: bytes, client: tuple[str, int]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(2)
            try:
                up.sendto(query, self.upstream)
                answer = up.recv(65536)
                self.sock.sendto(answer, client)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


class QueueProgram:
    """The daemon's `[delivery] qmail_queue`: a script that reads `<dir>/qq.mode` at each
    run and then records, exits, crashes or hangs. Recorded messages go to `<dir>/rec`
    (or to the directory given by `record_into`)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.rec = directory / "rec"
        self.rec.mkdir(parents=True, exist_ok=True)
        self.path = directory / "qmail-queue"
        self.path.write_text(
            "#!/bin/sh\n"
            f'. "{directory}/qq.mode"\n'
            'case "$MODE" in\n'
            f'  record) exec "{sys.executable}" "{RECORDER}" ;;\n'
            # qmail-queue reads the message and the envelope before deciding: so do we
            '  exit) cat >/dev/null; cat 0<&1 1>/dev/null; exit "$CODE" ;;\n'
            '  crash) cat >/dev/null; cat 0<&1 1>/dev/null; kill -SEGV $$ ;;\n'
            '  hang) exec sleep 60 ;;\n'
            # dash counts ulimit -f in 512-byte blocks: any real message is bigger
            f'  fsize) ulimit -f 1; exec "{sys.executable}" "{RECORDER}" ;;\n'
            f'  slow) sleep "$DELAY"; exec "{sys.executable}" "{RECORDER}" ;;\n'
            "esac\n"
            "exit 81\n"
        )
        self.path.chmod(0o755)
        self.set("record")

    def set(self, mode: str, *, code: int = 0, delay_s: float = 0,
            record_into: Path | None = None) -> None:
        rec = record_into or self.rec
        (self.dir / "qq.mode").write_text(
            f"MODE={mode}\nCODE={code}\nDELAY={delay_s}\nexport RECORD_DIR='{rec}'\n")

    def queued_for(self, rcpt: str, directory: Path | None = None) -> int:
        """How many recorded envelopes name `rcpt`."""
        count = 0
        for env in (directory or self.rec).glob("*.env"):
            parts = env.read_bytes().split(b"\0")
            count += sum(1 for p in parts if p == b"T" + rcpt.encode())
        return count


# --- the table ---------------------------------------------------------------------------

@dataclass
class Row:
    fault: str
    stage: str
    expected: str
    got: str
    queued: int
    ok: bool
    note: str = ""


@dataclass
class FaultTable:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def render(self) -> list[str]:
        heads = ("fault", "stage", "expected", "client saw", "queued", "invariant")
        cells = [(r.fault, r.stage, r.expected, r.got, str(r.queued),
                  ("ok" if r.ok else "BROKEN") + (f" ({r.note})" if r.note else ""))
                 for r in self.rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
        line = "| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)) + " |"
        out = [line, "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += ["| " + " | ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) + " |"
                for cell in cells]
        return out


TABLE_PLUGIN = "mailguard-fault-table"


class _Printer:
    """Prints the table in pytest's terminal summary (a plugin registered once)."""

    def __init__(self, table: FaultTable) -> None:
        self.table = table

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.table.rows:
            return
        terminalreporter.section("fault x stage table (issue #12)")
        for line in self.table.render():
            terminalreporter.write_line(line)


def register_table(config: pytest.Config, table: FaultTable, summary_file: Path) -> None:
    config.pluginmanager.register(_Printer(table), TABLE_PLUGIN)

    def write() -> None:
        if table.rows:
            summary_file.write_text("\n".join(table.render()) + "\n")

    config.add_cleanup(write)


# --- classifying what the client saw ----------------------------------------------------

def classify(reply: bytes | None) -> str:
    """'250', '4xx', '5xx', or 'lost' (EOF, reset or no answer in time)."""
    if not reply or len(reply) < 3 or not reply[:3].isdigit():
        return "lost"
    code = int(reply[:3])
    if code == 250:
        return "250"
    return f"{code // 100}xx"


def first_line(reply: bytes | None) -> str:
    if not reply:
        return "(connection lost)"
    return reply.split(b"\r\n", 1)[0].decode("ascii", "replace")[:60]


def invariant(outcome: str, queued: int, *, lost_may_queue: bool = False) -> tuple[bool, str]:
    """Issue #12: 250 → queued exactly once; 4xx/5xx → not queued; a lost connection
    (the client will retry) → not queued, unless the loss came after the hand-over
    started (`lost_may_queue`: SMTP's known duplicate window, RFC 1047)."""
    if outcome == "250":
        return queued == 1, ""
    if outcome in ("4xx", "5xx"):
        return queued == 0, ""
    if lost_may_queue:
        return queued <= 1, "duplicate window" if queued else ""
    return queued == 0, ""
