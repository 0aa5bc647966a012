"""The state layer against real databases: a SQLite file and the real PostgreSQL.

Every `store_url` test runs on both backends. PostgreSQL is the server behind the
`pg_url` fixture (tests/conftest.py: skips, or fails under CI, when it is not running);
each test creates and drops its own database there.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from mailguard.errors import ConfigError, TemporaryError
from mailguard.store import migrate
from mailguard.store.engine import create_engine, normalise_url, safe_url
from mailguard.store.errors import SchemaOutOfDate
from mailguard.store.message_log import MessageLogStore, join_rcpts, split_rcpts
from mailguard.store.models import VERSION_TABLE, Base
from mailguard.store.records import MessageRecord
from mailguard.store.repo import Store


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rec(ts: float, outcome: str = "accepted", **kw: object) -> MessageRecord:
    fields: dict[str, object] = {
        "ts": ts,
        "session_id": f"s-{ts}",
        "client_ip": "192.0.2.7",
        "helo": "mx.example.net",
        "mail_from": "alice@example.net",
        "rcpts": ("bob@example.org",),
        "size": 1234,
        "outcome": outcome,
        "reply_code": 250,
        "queue_id": "q1",
        "duration_ms": 12,
        "verdicts": "dnsbl=pass",
        "direction": "in",
        "dispositions": "delivered=1",
        "host": "mx1.example.net",
    }
    fields.update(kw)
    return MessageRecord(**fields)  # type: ignore[arg-type]


# --- schema lifecycle -------------------------------------------------------------------


async def test_fresh_database_asks_for_upgrade(store_url: str) -> None:
    assert await migrate.current_revision(store_url) is None
    hint = f'database is not initialised: run "mailguard db upgrade --store {safe_url(store_url)}"'
    with pytest.raises(SchemaOutOfDate) as info:
        await migrate.ensure_current(store_url)
    assert str(info.value) == hint
    with pytest.raises(SchemaOutOfDate, match="not initialised"):
        await Store.open(store_url)


async def test_upgrade_is_idempotent_and_reaches_head(store_url: str) -> None:
    head = migrate.head_revision()
    assert await migrate.upgrade(store_url) == (None, head)
    await migrate.ensure_current(store_url)
    assert await migrate.current_revision(store_url) == head
    assert await migrate.upgrade(store_url) == (head, head)
    store = await Store.open(store_url)
    await store.close()


async def test_concurrent_upgrades_both_succeed(store_url: str) -> None:
    # Two MX hosts (or two admins) upgrading at once must not break the schema.
    head = migrate.head_revision()
    results = await asyncio.gather(migrate.upgrade(store_url), migrate.upgrade(store_url))
    assert sorted(results, key=str) == sorted([(None, head), (head, head)], key=str)


async def test_migrations_match_models(store_url: str) -> None:
    # A table or column added to models.py without a revision (or vice versa) fails here.
    await migrate.upgrade(store_url)

    def diff(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return list(compare_metadata(ctx, Base.metadata))

    engine = create_engine(store_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_older_schema_names_both_revisions(store_url: str) -> None:
    await migrate.upgrade(store_url)
    head = migrate.head_revision()
    assert head != "0001"
    # An older database: stamped at the first revision (its tables don't matter here).
    engine = create_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0001'"))
    finally:
        await engine.dispose()
    expected = (
        f"database schema is at revision 0001, mailguard needs {head}: "
        f'run "mailguard db upgrade --store {safe_url(store_url)}"'
    )
    with pytest.raises(SchemaOutOfDate) as info:
        await migrate.ensure_current(store_url)
    assert str(info.value) == expected
    assert (info.value.current, info.value.head) == ("0001", head)
    with pytest.raises(SchemaOutOfDate, match=f"mailguard needs {head}"):
        await Store.open(store_url)
    store = await Store.open(store_url, check_schema=False)
    await store.close()


async def test_schema_newer_than_code_is_refused(store_url: str) -> None:
    await migrate.upgrade(store_url)
    engine = create_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff'"))
    finally:
        await engine.dispose()
    with pytest.raises(SchemaOutOfDate, match=r"at revision ffff, newer than this mailguard knows"):
        await Store.open(store_url)
    with pytest.raises(SchemaOutOfDate, match="ffff"):
        await migrate.upgrade(store_url)


# --- message log ------------------------------------------------------------------------


async def test_message_log_round_trip(store: Store) -> None:
    many = tuple(f"user{i}@example.org" for i in range(300))
    odd = ('"a,b"@example.org', '"back\\slash"@example.org', "plain@example.org")
    utf8 = _rec(
        1_800_000_000.125,
        helo="mx.bücher.example",
        mail_from="jörg@bücher.example",
        rcpts=("用户@例子.广告", "ελένη@παράδειγμα.δοκιμή"),
        verdicts="spamd=4.2 clamd=clean greylist=pass",
    )
    records = [
        _rec(1_800_000_001.0, rcpts=many, size=2**40),
        _rec(1_800_000_002.0, outcome="rejected", reply_code=554, rcpts=odd),
        _rec(1_800_000_003.0, outcome="tempfail", reply_code=451, rcpts=()),
        utf8,
    ]
    for rec in records:
        await MessageLogStore(store.db).record([rec])

    newest_first = sorted(records, key=lambda r: r.ts, reverse=True)
    assert await MessageLogStore(store.db).recent() == newest_first
    assert await MessageLogStore(store.db).recent(limit=2) == newest_first[:2]
    assert await MessageLogStore(store.db).counts(0.0) == {
        "accepted": 2, "rejected": 1, "tempfail": 1}
    assert await MessageLogStore(store.db).counts(1_800_000_002.0) == {"rejected": 1, "tempfail": 1}
    assert await MessageLogStore(store.db).counts(1_900_000_000.0) == {}

    assert await MessageLogStore(store.db).purge(1_800_000_002.0) == 2
    assert await MessageLogStore(store.db).recent() == newest_first[:2]
    assert await MessageLogStore(store.db).purge(1_800_000_002.0) == 0


async def test_records_written_in_one_batch(store: Store) -> None:
    batch = [_rec(float(i), rcpts=(f"u{i}@x",)) for i in range(1, 6)]
    await MessageLogStore(store.db).record(batch)
    await MessageLogStore(store.db).record([])  # nothing to write: no error, no row
    newest_first = sorted(batch, key=lambda r: r.ts, reverse=True)
    assert await MessageLogStore(store.db).recent() == newest_first


async def test_rcpt_count_column_matches(store: Store) -> None:
    await MessageLogStore(store.db).record([_rec(1.0, rcpts=("a@x", "b@x", '"c,d"@x'))])
    async with store.engine.connect() as conn:
        row = (await conn.execute(text("SELECT rcpts, rcpt_count FROM message_log"))).one()
    assert tuple(row) == ('a@x,b@x,"c\\,d"@x', 3)


async def test_purge_works_in_batches(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mailguard.store.message_log.PURGE_BATCH", 3)
    await asyncio.gather(*(MessageLogStore(store.db).record([_rec(float(i))]) for i in range(10)))
    assert await MessageLogStore(store.db).purge(8.0) == 8
    assert [r.ts for r in await MessageLogStore(store.db).recent()] == [9.0, 8.0]


async def test_concurrent_writers_all_land(store: Store) -> None:
    await asyncio.gather(*(MessageLogStore(store.db).record([_rec(float(i))]) for i in range(40)))
    assert await MessageLogStore(store.db).counts(0.0) == {"accepted": 40}


@pytest.mark.parametrize(
    "rcpts",
    [(), ("a@x",), ("", ""), ("a\\", ",b"), ('"x,y"@z', "\\,\\\\")],
)
def test_rcpt_text_round_trips(rcpts: tuple[str, ...]) -> None:
    assert split_rcpts(join_rcpts(rcpts)) == rcpts


# --- failures ---------------------------------------------------------------------------


async def test_unreachable_postgres_is_temporary_and_hides_password() -> None:
    url = f"postgresql://mailguard:s3cret-pw@127.0.0.1:{_closed_port()}/mailguard"
    for attempt in (migrate.current_revision, migrate.upgrade, migrate.ensure_current):
        with pytest.raises(TemporaryError) as info:
            await attempt(url)
        assert "s3cret-pw" not in str(info.value)
        assert "127.0.0.1" in str(info.value)
    with pytest.raises(TemporaryError):
        await Store.open(url)
    store = await Store.open(url, check_schema=False)
    try:
        with pytest.raises(TemporaryError, match="recording message") as info:
            await MessageLogStore(store.db).record([_rec(1.0)])
        assert "s3cret-pw" not in str(info.value)
    finally:
        await store.close()


async def test_sqlite_unusable_path_is_temporary(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(TemporaryError, match="cannot create directory"):
        await migrate.upgrade(f"sqlite:///{blocker}/sub/mailguard.db")


# --- SQLite specifics -------------------------------------------------------------------


async def test_sqlite_file_and_directory_created_with_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "mailguard.db"
    url = f"sqlite:///{path}"
    # Asking for the revision must not leave an empty database behind.
    assert await migrate.current_revision(url) is None
    assert not path.parent.exists()
    await migrate.upgrade(url)
    assert path.is_file()
    store = await Store.open(url)
    try:
        async with store.engine.connect() as conn:
            pragmas = [
                (await conn.execute(text(f"PRAGMA {name}"))).scalar_one()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            ]
    finally:
        await store.close()
    assert pragmas == ["wal", 5000, 1]


def test_url_normalisation() -> None:
    assert normalise_url("sqlite:///var/db/x.db").drivername == "sqlite+aiosqlite"
    assert normalise_url("postgres://u:p@h/d").drivername == "postgresql+asyncpg"
    upgraded = normalise_url("postgresql://u:p%40ss@h:5433/d")
    assert (upgraded.drivername, upgraded.password, upgraded.port) == (
        "postgresql+asyncpg",
        "p@ss",
        5433,
    )
    assert safe_url("postgresql://u:p%40ss@h/d") == "postgresql://u@h/d"
    with pytest.raises(ConfigError, match="unsupported database 'mysql'"):
        normalise_url("mysql://u:p@h/d")
    with pytest.raises(ConfigError) as info:
        normalise_url("not a url with secret")
    assert "secret" not in str(info.value)
