"""The fault x stage table of issue #12, continued: faults that need a daemon of their
own. The daemon signalled during DATA and while handing over, its own Maildir spool on a
full filesystem, a hung store at shutdown, the SQLite store locked and deleted. Rows
join the table of tests/e2e/test_faults.py (tests/e2e/fault_cases.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.e2e.daemon_harness import Client, Daemon, start_daemon, upgrade_store
from tests.e2e.fault_cases import (
    check,
    fault_table,  # noqa: F401 - the `table` fixture
    fill_up,
    message,
    prepare_store,
    rcpt,
    record,
    send,
    small_tmpfs,
)
from tests.e2e.fault_support import FaultTable, FaultyServer, QueueProgram
from tests.integration.databases import pg_admin

# --- signals, and the daemon's own spool ---------------------------------------------------

SOLO = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["filtered.test"]
shutdown_grace_s = 4

[delivery]
method = "qmail-queue"
qmail_queue = "{tmp}/qmail-queue"
timeout_s = 10
"""


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("sqlite-template") / "mailguard.db"
    upgrade_store(f"sqlite+aiosqlite:///{db}")
    return db


def solo(tmp: Path, template: Path, config: str = SOLO) -> tuple[Daemon, QueueProgram]:
    qq = QueueProgram(tmp)
    shutil.copy(template, tmp / "mailguard.db")
    d = start_daemon(tmp, config, upgrade=False)
    return d, qq


def open_data(d: Daemon, to: str) -> Client:
    c = Client(d.host, d.port, source="127.0.0.9")
    assert c.reply().startswith(b"220")
    for line in ("HELO fault.test", "MAIL FROM:<a@example.org>", f"RCPT TO:<{to}>"):
        assert c.cmd(line).startswith(b"250")
    assert c.cmd("DATA").startswith(b"354")
    return c


def finish(c: Client, rest: bytes) -> bytes | None:
    try:
        c.send(rest)
        return c.reply() or None
    except OSError:
        return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_daemon_signalled_during_data(tmp_path: Path, sqlite_template: Path,
                                      table: FaultTable, sig: signal.Signals) -> None:
    d, qq = solo(tmp_path, sqlite_template)
    to = rcpt()
    try:
        c = open_data(d, to)
        try:
            msg = message(to) + b".\r\n"
            c.send(msg[:30])
            time.sleep(0.3)
            d.proc.send_signal(sig)
            time.sleep(0.5)
            reply = finish(c, msg[30:])
        finally:
            c.close()
        code = d.proc.wait(15)
    finally:
        d.stop()
    time.sleep(0.2)
    expected = "250|4xx" if sig == signal.SIGTERM else "lost"
    check(record(table, f"daemon gets {sig.name}", "DATA (mid-body)", expected, reply,
                 queued=qq.queued_for(to)))
    if sig == signal.SIGTERM:
        assert code == 0  # a clean shutdown, transaction in flight finished within grace


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_daemon_signalled_while_handing_over(tmp_path: Path, sqlite_template: Path,
                                             table: FaultTable, sig: signal.Signals) -> None:
    """qmail-queue takes 2 s: the signal arrives while it runs. SIGTERM: the hand-over
    completes and the client gets its 250. SIGKILL: the client loses the connection; the
    orphaned qmail-queue may still queue (qmail-smtpd has the same window)."""
    d, qq = solo(tmp_path, sqlite_template)
    qq.set("slow", delay_s=2)
    to = rcpt()
    try:
        c = open_data(d, to)
        try:
            c.send(message(to) + b".\r\n")
            time.sleep(0.8)
            d.proc.send_signal(sig)
            try:
                reply: bytes | None = c.reply() or None
            except OSError:
                reply = None
        finally:
            c.close()
        d.proc.wait(15)
    finally:
        d.stop()
    deadline = time.monotonic() + 4  # an orphaned qmail-queue finishes its 2 s
    while time.monotonic() < deadline and not qq.queued_for(to):
        time.sleep(0.1)
    time.sleep(0.3)
    if sig == signal.SIGTERM:
        check(record(table, "daemon gets SIGTERM", "queue (hand-over running)", "250", reply,
                     queued=qq.queued_for(to)))
    else:
        check(record(table, "daemon gets SIGKILL", "queue (hand-over running)", "lost",
                     reply, queued=qq.queued_for(to), lost_may_queue=True))



MAILDIR = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["filtered.test"]
shutdown_grace_s = 3

[delivery]
method = "maildir"
spool = "{tmp}/spool"
"""


def test_maildir_spool_filesystem_full(tmp_path: Path, sqlite_template: Path,
                                       table: FaultTable) -> None:
    """The daemon's own spool on a full filesystem: 451, nothing half-written left."""
    with small_tmpfs(tmp_path / "spool", fill=False) as spool:
        shutil.copy(sqlite_template, tmp_path / "mailguard.db")
        d = start_daemon(tmp_path, MAILDIR, upgrade=False)
        try:
            first = rcpt()
            assert (send(d, first) or b"").startswith(b"250")  # the Maildir exists now
            fill_up(spool / "filler")
            to = rcpt()
            reply = send(d, to, extra="y" * 8000 + "\r\n")
            local = to.split("@")[0]
            stored = list((spool / "filtered.test" / local / "new").glob("*")) \
                if (spool / "filtered.test" / local / "new").is_dir() else []
            check(record(table, "Maildir spool filesystem full", "queue", "4xx", reply,
                         queued=len(stored)))
            leftovers = [p for p in spool.glob("filtered.test/*/tmp/*")]
            assert leftovers == [], f"half-written files left: {leftovers}"
            os.unlink(spool / "filler")
            to = rcpt()
            assert (send(d, to) or b"").startswith(b"250")  # space again: mail flows
        finally:
            assert d.stop() == 0


STORE_SOLO = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["filtered.test"]
shutdown_grace_s = 3

[delivery]
method = "maildir"
spool = "{tmp}/spool"
"""


def test_daemon_stops_while_the_store_hangs(tmp_path: Path, pg_url: str,
                                            table: FaultTable) -> None:
    """A store that stops answering (hung server, connection dropped without a reset)
    costs statistics only: mail is accepted, and SIGTERM still stops the daemon (the
    message-log writer waiting on the dead connection is given up, not awaited forever)."""
    server = make_url(pg_url)
    name = f"mg_faults_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg_admin(pg_url, f'CREATE DATABASE "{name}"'))
    pg = FaultyServer((server.host or "127.0.0.1", server.port or 5432), "postgresql")
    try:
        upgrade_store(server.set(database=name).render_as_string(hide_password=False))
        proxied = server.set(database=name, host="127.0.0.1", port=pg.port) \
            .render_as_string(hide_password=False)
        d = start_daemon(tmp_path, STORE_SOLO, upgrade=False, store=proxied)
        try:
            assert (send(d, rcpt()) or b"").startswith(b"250")  # pooled connection made
            pg.set_mode("hang")
            to = rcpt()
            reply = send(d, to)
            time.sleep(0.5)  # the message-log write is now stuck on the frozen connection
            d.proc.send_signal(signal.SIGTERM)
            try:
                code: int | None = d.proc.wait(20)
            except subprocess.TimeoutExpired:
                code = None
        finally:
            d.stop(signal.SIGKILL)
        local = to.split("@")[0]
        new = tmp_path / "spool" / "filtered.test" / local / "new"
        queued = len(list(new.iterdir())) if new.is_dir() else 0
        check(record(table, "store hung, then daemon gets SIGTERM", "after DATA (log write)",
                     "250", reply, queued=queued))
        assert code == 0, f"daemon did not stop on SIGTERM (exit {code})\n{d.read_log()}"
    finally:
        pg.close()
        asyncio.run(pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))



# --- the SQLite store (the default) ------------------------------------------------------

SQLITE_RIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["filtered.test"]
shutdown_grace_s = 3

[delivery]
method = "qmail-queue"
qmail_queue = "{tmp}/qmail-queue"

[spamd]
servers = ["SPAMD"]
timeout_s = 5

[scan]
deadline_s = 3
"""

LOCK_HOLDER = r"""
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("CREATE TABLE lock_probe (x)")  # a write: the lock is really taken
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


def test_sqlite_store_faults(tmp_path: Path, spamd_addr: tuple[str, int],
                             table: FaultTable) -> None:
    """locked: another process holds SQLite's write lock (a long admin or web write): in
    WAL mode the daemon's reads go on, and its message-log write waits off the SMTP
    path, so mail is accepted. deleted: the file is unlinked under the running daemon
    (its open connections keep the old inode, new ones would find no tables). Either
    way a 250 means queued once."""
    qq = QueueProgram(tmp_path)
    db = tmp_path / "mailguard.db"
    prepare_store(f"sqlite+aiosqlite:///{db}")
    config = SQLITE_RIG.replace("SPAMD", f"{spamd_addr[0]}:{spamd_addr[1]}")
    d = start_daemon(tmp_path, config, upgrade=False)
    try:
        assert (send(d, rcpt()) or b"").startswith(b"250")  # pooled connections made
        holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(db), "6"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            to = rcpt()
            started = time.monotonic()
            reply = send(d, to)
            elapsed = time.monotonic() - started
        finally:
            holder.kill()
            holder.wait()
            if holder.stdout is not None:
                holder.stdout.close()
        check(record(table, "store (SQLite) locked by a writer", "QUEUE (prefs read)", "250",
                     reply, queued=qq.queued_for(to)))
        assert elapsed < 10, f"the client waited {elapsed:.1f}s"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        to = rcpt()
        reply = send(d, to)
        check(record(table, "store (SQLite) file deleted", "QUEUE (prefs read)", "250|4xx",
                     reply, queued=qq.queued_for(to)))
    finally:
        assert d.stop() == 0
