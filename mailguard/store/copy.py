"""`mailguard db copy`: every table of the schema from one database into an empty one
(a SQLite store into PostgreSQL when a second MX host joins; any direction works).

The source must be at the current revision; the target is migrated to it first and must
hold no mailguard rows. The source is read in one transaction (a consistent snapshot
even if a daemon still writes) and the target written in one, so a failed copy leaves
the target migrated and empty, ready for another try. Rows keep their primary keys; on
PostgreSQL the id sequences then restart after the largest id copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, func, inspect, select
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailguard.errors import ConfigError, MailguardError
from mailguard.store import migrate
from mailguard.store.engine import (
    SQLITE_BEGIN,
    create_engine,
    normalise_url,
    safe_url,
    sqlite_path,
    translate_errors,
)
from mailguard.store.models import Base

BATCH_ROWS = 5000  # rows per read and per insert: bounded memory, few round trips

# (table, rows copied so far, rows in the source table)
Progress = Callable[[str, int, int], None]


class CopyRefused(MailguardError):
    """The copy cannot start (target not empty, source not current): nothing was written."""


@dataclass(frozen=True, slots=True)
class TableCopied:
    table: str
    rows: int


def tables() -> Sequence[Table]:
    """Every table of the schema, parents before children."""
    return Base.metadata.sorted_tables


def same_database(a: str, b: str) -> bool:
    """True when two URLs name the same database (same SQLite file, or same PostgreSQL
    host, port and database), whatever driver or spelling they use."""
    ua, ub = normalise_url(a), normalise_url(b)
    pa, pb = sqlite_path(ua), sqlite_path(ub)
    if pa is not None or pb is not None:
        return pa is not None and pb is not None and pa.resolve() == pb.resolve()
    return _pg_key(ua) == _pg_key(ub)


def _pg_key(url: URL) -> tuple[str, str, int, str]:
    return (url.drivername, url.host or "localhost", url.port or 5432, url.database or "")


def check_urls(source: str, target: str) -> None:
    """Raise ConfigError (a usage error) for URLs no copy can use."""
    for key, url in (("--from", source), ("--to", target)):
        parsed = normalise_url(url)  # ConfigError for an unsupported backend
        if parsed.drivername.startswith("sqlite") and sqlite_path(parsed) is None:
            raise ConfigError("db copy", key, "an in-memory SQLite database cannot be copied")
    if same_database(source, target):
        raise ConfigError("db copy", "--to", "source and target are the same database")


async def copy_store(source: str, target: str, *, batch_rows: int = BATCH_ROWS,
                     progress: Progress | None = None) -> list[TableCopied]:
    """Copy every table from `source` into the empty database `target`.

    Raises ConfigError (unusable URLs), CopyRefused or SchemaOutOfDate (nothing written)
    and TemporaryError (a database failure: the target's copy is rolled back).
    """
    check_urls(source, target)
    if migrate.missing_sqlite_file(source):
        raise CopyRefused(f"source {safe_url(source)}: no such database file")
    try:
        migrate.check_revision(await migrate.current_revision(source), source)
    except migrate.SchemaOutOfDate as e:
        raise CopyRefused(f"source: {e}") from e

    tgt = create_engine(target)
    try:
        # Refuse before the migration changes anything in a database that is in use.
        await _refuse_rows(tgt, target)
    finally:
        await tgt.dispose()
    await migrate.upgrade(target)

    src, tgt = create_engine(source), create_engine(target)
    try:
        async with _snapshot(src, source) as read, _writer(tgt, target) as write:
            await _refuse_rows_on(write, target)  # again, inside the copy's transaction
            copied = [await _copy_table(table, read, write, urls=(source, target),
                                        batch_rows=batch_rows, progress=progress)
                      for table in tables()]
            if write.dialect.name == "postgresql":
                with translate_errors("resetting id sequences", target):
                    await _reset_sequences(write)
        return copied
    finally:
        await src.dispose()
        await tgt.dispose()


@contextlib.asynccontextmanager
async def _snapshot(engine: AsyncEngine, url: str) -> AsyncIterator[AsyncConnection]:
    """One read transaction: every table as of one moment."""
    with translate_errors("opening the source", url):
        conn = await engine.connect()
    try:
        if engine.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        with translate_errors("opening the source", url):
            await conn.begin()
        yield conn
    finally:
        await conn.close()  # read only: closing rolls the transaction back


@contextlib.asynccontextmanager
async def _writer(engine: AsyncEngine, url: str) -> AsyncIterator[AsyncConnection]:
    """The target's one write transaction: committed only if the whole copy worked."""
    writer = engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
    with translate_errors("writing the target", url):
        async with writer.begin() as conn:
            yield conn


async def _refuse_rows(engine: AsyncEngine, url: str) -> None:
    with translate_errors("reading the target", url):
        async with engine.connect() as conn:
            await _refuse_rows_on(conn, url)


async def _refuse_rows_on(conn: AsyncConnection, url: str) -> None:
    with translate_errors("reading the target", url):
        filled = await conn.run_sync(_tables_with_rows)
    if filled:
        raise CopyRefused(
            f"target {safe_url(url)} is not empty (rows in {', '.join(filled)}): "
            "copy only into a new, empty database")


def _tables_with_rows(conn: Connection) -> list[str]:
    present = set(inspect(conn).get_table_names())
    return [t.name for t in tables()
            if t.name in present and conn.execute(select(1).select_from(t).limit(1)).first()]


async def _copy_table(table: Table, read: AsyncConnection, write: AsyncConnection, *,
                      urls: tuple[str, str], batch_rows: int,
                      progress: Progress | None) -> TableCopied:
    source, target = urls
    with translate_errors(f"counting {table.name}", source):
        total = int((await read.execute(select(func.count()).select_from(table))).scalar_one())
    done = 0
    if progress is not None:
        progress(table.name, done, total)
    # Primary-key order: the ids a PostgreSQL sequence restarts after come last.
    query = select(table).order_by(*table.primary_key.columns)
    with translate_errors(f"reading {table.name}", source):
        result = await read.stream(query)
        async for batch in result.mappings().partitions(batch_rows):
            rows: list[dict[str, Any]] = [dict(row) for row in batch]
            with translate_errors(f"writing {table.name}", target):
                await write.execute(table.insert(), rows)
            done += len(rows)
            if progress is not None:
                progress(table.name, done, total)
    with translate_errors(f"checking {table.name}", target):
        written = int((await write.execute(select(func.count()).select_from(table))).scalar_one())
    if written != total or done != total:
        raise MailguardError(
            f"copying {table.name}: {total} rows in the source, {done} read, "
            f"{written} in the target (a writer changed it?): nothing was kept")
    return TableCopied(table.name, total)


async def _reset_sequences(conn: AsyncConnection) -> None:
    """Rows were inserted with their ids, which does not move a PostgreSQL sequence:
    make the next id the largest copied + 1 (1 for an empty table)."""
    for table in tables():
        column = table.autoincrement_column
        if column is None:
            continue
        # pg_get_serial_sequence parses its first argument as a (quoted) identifier
        name = conn.dialect.identifier_preparer.quote(table.name)
        sequence = func.pg_get_serial_sequence(name, column.name)
        await conn.execute(select(
            func.setval(sequence, func.coalesce(func.max(column), 0) + 1, False)))
