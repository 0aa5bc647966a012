"""`mailguard db copy`: a SQLite store filled through the store modules, copied by the
real command into a fresh PostgreSQL database; every table compared row by row."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from mailguard.store import migrate
from mailguard.store.accounts import AccountStore
from mailguard.store.alerts import AlertStore
from mailguard.store.auth_attempts import AuthAttemptStore
from mailguard.store.copy import tables
from mailguard.store.engine import create_engine
from mailguard.store.greylist import GreylistStore
from mailguard.store.greylist_records import ClientState, TripletState
from mailguard.store.message_log import MessageLogStore
from mailguard.store.models import MessageLog, Quarantine, Userpref
from mailguard.store.overrides import OverrideStore
from mailguard.store.prefs import PrefsStore
from mailguard.store.quarantine import NewEntry, QuarantineStore
from mailguard.store.queue_readings import QueueReadingRecord, QueueReadingStore
from mailguard.store.records import MessageRecord
from mailguard.store.repo import Store
from mailguard.store.roles import RoleStore
from mailguard.store.users import UserStore
from mailguard.store.web_sessions import WebSessionStore
from tests.integration.databases import pg_admin

pytestmark = pytest.mark.pg

NOW = 1_780_000_000.0
LOG_ROWS = 23  # more than a few batches of BATCH below
BATCH = 5


@dataclass
class Run:
    code: int
    out: str
    err: str


async def db_copy(*args: str) -> Run:
    """The real command in its own process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailguard.cli.main", "db", "copy", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def pg_fresh(pg_url: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database (not even migrated)."""
    name = f"mg_copy_{uuid.uuid4().hex[:16]}"
    await pg_admin(pg_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> str:
    """A SQLite store with rows in every table, written by the store modules."""
    url = f"sqlite:///{tmp_path / 'mailguard.db'}"
    await migrate.upgrade(url)
    store = await Store.open(url)
    try:
        await fill(store)
    finally:
        await store.close()
    return url


async def fill(store: Store) -> None:
    db = store.db
    greylist = GreylistStore(db)
    for i in range(3):
        def decide(entry: TripletState | None, client: ClientState | None,
                   i: int = i) -> tuple[TripletState, ClientState, None]:
            return (TripletState(NOW + i, NOW + i, None, 1),
                    ClientState(i, NOW, NOW + i), None)
        await greylist.update(f"192.0.2.{i}", "s@example.net", "r@example.com", decide)
    await OverrideStore(db).add("198.51.100.0/24", "deny", reason="spam run", now=NOW,
                                created_by="admin@example.com")
    await OverrideStore(db).add("2001:db8::/48", "allow", now=NOW, expires_ts=NOW + 86400)
    prefs = PrefsStore(db)
    await prefs.set_domain("example.com", NOW, spam_enabled=True, spam_action="box",
                           spam_box="Junk", users_may_override=False)
    await prefs.set_pref("@GLOBAL", "required_score", "5.0")
    await prefs.set_pref("joe@example.com", "whitelist_from", "*@friend.test", add=True)
    await prefs.set_pref("joe@example.com", "whitelist_from", "*@other.test", add=True)
    accounts = AccountStore(db)
    await accounts.add("joe@example.com", "$argon2id$fake", NOW)
    await accounts.add("ann@example.com", None, NOW)
    await prefs.set_user("joe@example.com", NOW, spam_enabled=False, language="de")
    ids = await QuarantineStore(db).add(
        [NewEntry("joe@example.com", "x@spam.test", "X <x@spam.test>", "Grüße", 9.5, 1234,
                  "spam", "BAYES_99", "q/1"),
         NewEntry("ann@example.com", "y@virus.test", "", "", None, 99, "virus",
                  "Eicar-Test-Signature", "q/2")], NOW, NOW + 86400 * 30)
    assert len(ids) == 2
    assert await AuthAttemptStore(db).reserve("192.0.2.7", 100, 5) == 1
    log = MessageLogStore(db, host="mx1")
    await log.record([
        MessageRecord(NOW + i, f"s{i}", "192.0.2.9", "helo.test", "a@b.test",
                      ("joe@example.com", "ann@example.com") if i % 2 else ("joe@example.com",),
                      1000 + i, "accepted" if i % 3 else "rejected", 250 if i % 3 else 554,
                      f"q{i}", 12, "dnsbl=pass", direction="in",
                      dispositions="delivered=1")
        for i in range(LOG_ROWS)])
    await RoleStore(db).grant("admin@example.com", "*", NOW)
    await RoleStore(db).grant("joe@example.com", "example.com", NOW)
    users = UserStore(db)
    await users.record_event("joe@example.com", NOW, 3, domains=["a.test", "b.test"],
                             subject="hello", keep_s=86400)
    await users.suspend("bulk@example.com", "burst", NOW)
    await users.set_setting("panic", "on", NOW)
    await AlertStore(db).touch("scanner:clamd", "scanner", "clamd down", host="mx1", now=NOW,
                               remind_s=3600)
    await QueueReadingStore(db).add(QueueReadingRecord("mx1", NOW, 5, 1, 2, 3, 60.0))
    sessions = WebSessionStore(db)
    await sessions.create("joe@example.com", NOW)
    assert await sessions.begin_login({"ip:192.0.2.1": 10}, NOW, 600) is not None


async def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows in primary-key order."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return {t.name: [tuple(r) for r in await conn.execute(
                        select(t).order_by(*t.primary_key.columns))]
                    for t in tables()}
    finally:
        await engine.dispose()


async def test_copy_sqlite_to_postgresql(sqlite_store: str, pg_fresh: str) -> None:
    before = await dump(sqlite_store)
    assert [name for name, rows in before.items() if not rows] == []  # every table filled
    assert len(before["message_log"]) == LOG_ROWS

    run = await db_copy("--from", sqlite_store, "--to", pg_fresh, "--batch-rows", str(BATCH))
    assert run.code == 0, run.err
    total = sum(len(rows) for rows in before.values())
    assert f"copied {total} rows in {len(before)} tables" in run.out
    # progress per table and per batch, on stderr
    assert f"message_log: {BATCH}/{LOG_ROWS} rows" in run.err
    assert f"message_log: {LOG_ROWS}/{LOG_ROWS} rows" in run.err
    assert f"userpref: {len(before['userpref'])}/{len(before['userpref'])} rows" in run.err

    assert await migrate.current_revision(pg_fresh) == migrate.head_revision()
    after = await dump(pg_fresh)
    for name, rows in before.items():
        assert after[name] == rows, name

    # The id sequences restart after the copied ids: new rows get fresh ones.
    store = await Store.open(pg_fresh)
    try:
        ids = await QuarantineStore(store.db).add(
            [NewEntry("joe@example.com", "z@spam.test", "", "", 7.0, 1, "spam", "", "q/3")],
            NOW, NOW + 60)
        assert ids == [max(r[0] for r in before["quarantine"]) + 1]
        await MessageLogStore(store.db, host="mx2").record([
            MessageRecord(NOW, "new", "192.0.2.1", "h", "", ("joe@example.com",), 1,
                          "accepted", 250, "q", 1, "")])
        await PrefsStore(store.db).set_pref("ann@example.com", "required_score", "4")
        async with store.engine.connect() as conn:
            assert await conn.scalar(select(func.max(MessageLog.id))) == LOG_ROWS + 1
            assert await conn.scalar(select(func.count()).select_from(Quarantine)) == 3
            top = await conn.scalar(select(func.max(Userpref.prefid)))
        assert top == max(r[0] for r in before["userpref"]) + 1
    finally:
        await store.close()

    # Copied once, the target is no longer empty: a second copy is refused, unchanged.
    again = await db_copy("--from", sqlite_store, "--to", pg_fresh)
    assert again.code == 1
    assert "is not empty" in again.err and "message_log" in again.err
    assert "copy only into a new, empty database" in again.err
    assert len((await dump(pg_fresh))["message_log"]) == LOG_ROWS + 1


async def test_refusals(sqlite_store: str, pg_fresh: str, tmp_path: Path) -> None:
    # same database, however spelled: a usage error
    alias = sqlite_store.replace("sqlite:///", "sqlite+aiosqlite:///")
    run = await db_copy("--from", sqlite_store, "--to", alias)
    assert (run.code, run.err.strip()) == (
        2, "mailguard: db copy: --to: source and target are the same database")
    # an in-memory database is nothing to copy from or into
    run = await db_copy("--from", sqlite_store, "--to", "sqlite://")
    assert run.code == 2 and "in-memory" in run.err
    # a source that does not exist: no file is left behind, the target is untouched
    missing = tmp_path / "missing.db"
    run = await db_copy("--from", f"sqlite:///{missing}", "--to", pg_fresh)
    assert run.code == 1 and "no such database file" in run.err
    assert not missing.exists()
    assert await migrate.current_revision(pg_fresh) is None


async def test_source_at_an_old_revision(tmp_path: Path, pg_fresh: str) -> None:
    old = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(old)
    try:
        async with engine.begin() as conn:
            def to_0003(sync: Any) -> None:
                from alembic import command  # noqa: PLC0415
                cfg = migrate.alembic_config()
                cfg.attributes["connection"] = sync
                command.upgrade(cfg, "0003")
            await conn.run_sync(to_0003)
    finally:
        await engine.dispose()
    run = await db_copy("--from", old, "--to", pg_fresh)
    assert run.code == 1
    assert "source: database schema is at revision 0003" in run.err
    assert "mailguard db upgrade" in run.err
    assert await migrate.current_revision(pg_fresh) is None  # nothing done to the target


async def test_copy_back_to_sqlite(sqlite_store: str, pg_fresh: str, tmp_path: Path) -> None:
    """Any direction: PostgreSQL into a new SQLite file gives the same rows back."""
    assert (await db_copy("--from", sqlite_store, "--to", pg_fresh)).code == 0
    back = f"sqlite:///{tmp_path / 'new' / 'back.db'}"
    run = await db_copy("--from", pg_fresh, "--to", back)
    assert run.code == 0, run.err
    assert await dump(back) == await dump(sqlite_store)


async def test_a_failed_copy_keeps_nothing(sqlite_store: str, pg_fresh: str) -> None:
    """A row PostgreSQL refuses (SQLite does not enforce VARCHAR(100)) fails the copy
    after other tables were written: all of it is rolled back, and a second try works."""
    engine = create_engine(sqlite_store)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(Userpref).where(Userpref.username == "@GLOBAL")
                               .values(value="x" * 101))
        run = await db_copy("--from", sqlite_store, "--to", pg_fresh)
        assert run.code == 1
        assert "mailguard: store: writing userpref failed on postgresql" in run.err
        assert "value too long for type character varying(100)" in run.err
        assert "message_log: 23/23 rows" in run.err  # written before userpref, then undone
        assert await migrate.current_revision(pg_fresh) == migrate.head_revision()
        assert {name: rows for name, rows in (await dump(pg_fresh)).items() if rows} == {}

        async with engine.begin() as conn:
            await conn.execute(update(Userpref).where(Userpref.username == "@GLOBAL")
                               .values(value="5.0"))
    finally:
        await engine.dispose()
    run = await db_copy("--from", sqlite_store, "--to", pg_fresh)
    assert run.code == 0, run.err
    assert await dump(pg_fresh) == await dump(sqlite_store)
