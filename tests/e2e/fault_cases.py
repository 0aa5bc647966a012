"""The pieces every fault-table module shares (tests/e2e/test_faults*.py): one session
with a unique recipient, a row for the table and the invariant check, store preparation,
and a small full filesystem."""

from __future__ import annotations

import itertools
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import Client, Daemon, run_cli, upgrade_store
from tests.e2e.fault_support import (
    TABLE_PLUGIN,
    FaultTable,
    Row,
    classify,
    first_line,
    invariant,
    register_table,
)

_serial = itertools.count(1)


def rcpt() -> str:
    return f"f{next(_serial)}-{uuid.uuid4().hex[:6]}@filtered.test"


def message(rcpt: str, extra: str = "hello\r\n") -> bytes:
    return (f"From: a@example.org\r\nTo: {rcpt}\r\nSubject: fault case\r\n\r\n"
            f"{extra}").encode()


def send(d: Daemon, to: str, *, source: str = "127.0.0.9", extra: str = "hello\r\n",
         timeout_s: float = 60) -> bytes | None:
    """One session; the reply that decided it (the first refusal, else the final one), or
    None when the connection was lost."""
    try:
        c = Client(d.host, d.port, source=source, timeout_s=timeout_s)
    except OSError:
        return None
    try:
        greeting = c.reply()
        if not greeting.startswith(b"220"):
            return greeting or None
        for line in ("HELO fault.test", "MAIL FROM:<a@example.org>", f"RCPT TO:<{to}>"):
            r = c.cmd(line)
            if not r.startswith(b"250"):
                return r or None
        r = c.cmd("DATA")
        if not r.startswith(b"354"):
            return r or None
        c.send(message(to, extra).replace(b"\r\n.", b"\r\n..") + b".\r\n")
        return c.reply() or None
    except OSError:
        return None
    finally:
        c.close()


_TABLE = FaultTable()  # one table for every module of the suite


@pytest.fixture(name="table")
def fault_table(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> FaultTable:
    """The run's fault table; printed in the terminal summary and written to
    <basetemp>/fault-table.md. Test modules import this fixture."""
    if not request.config.pluginmanager.has_plugin(TABLE_PLUGIN):
        register_table(request.config, _TABLE,
                       tmp_path_factory.getbasetemp() / "fault-table.md")
    return _TABLE


def record(table: FaultTable, fault: str, stage: str, expected: str, reply: bytes | None,
           *, queued: int, lost_may_queue: bool = False) -> Row:
    outcome = classify(reply)
    ok, note = invariant(outcome, queued, lost_may_queue=lost_may_queue)
    row = Row(fault, stage, expected, first_line(reply), queued, ok, note)
    table.add(row)
    return row


def check(row: Row) -> None:
    """The invariant, and the class of reply the case must give (4xx where a retry can
    succeed, 250 where the fault must not matter)."""
    assert row.ok, f"invariant broken: {row}"
    got = "lost" if row.got == "(connection lost)" else (
        "250" if row.got.startswith("250") else f"{row.got[0]}xx")
    assert got in row.expected.split("|"), f"{row.fault} @ {row.stage}: expected " \
        f"{row.expected}, client saw {row.got!r}"


def prepare_store(direct_url: str) -> None:
    upgrade_store(direct_url)
    res = run_cli("domain", "spam", "on", "filtered.test", "--store", direct_url)
    assert res.returncode == 0, res.stderr


def fill_up(path: Path) -> None:
    """Write to `path` until the filesystem is full (unbuffered: nothing left to flush)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


class small_tmpfs:  # a context manager named like the function it stands for
    """A 64 KiB tmpfs at `path` (we are root in CI), filled up when `fill`."""

    def __init__(self, path: Path, *, fill: bool) -> None:
        self.path = path
        self.fill = fill

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0777", "tmpfs",
                              str(self.path)], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs (the suite runs as root): {res.stderr}")
        if self.fill:
            fill_up(self.path / "filler")
        return self.path

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
