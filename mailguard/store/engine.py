"""Async engines for the two supported backends, and error translation.

SQLite (`sqlite+aiosqlite`) is the embedded default; PostgreSQL (`postgresql+asyncpg`)
is how several MX hosts share state. Everything else is a configuration error.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, exc
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from mailguard.errors import ConfigError, TemporaryError

SQLITE_BUSY_TIMEOUT_MS = 5_000  # a writer waits this long for another writer's lock
# Execution option: how SQLite transactions BEGIN. A transaction that reads and then
# writes must take the write lock up front with "IMMEDIATE"
# (`engine.execution_options(sqlite_begin="IMMEDIATE")`): a DEFERRED one that finds
# another writer got there first fails at once, busy_timeout or not. Ignored by PostgreSQL.
SQLITE_BEGIN = "sqlite_begin"
PG_CONNECT_TIMEOUT_S = 10  # asyncpg's default of 60 s would hold SMTP sessions too long
PG_POOL_TIMEOUT_S = 10  # waiting for a free pooled connection

# Driver names we accept, mapped to the async driver we run with.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def _parse(url: str | URL) -> URL:
    if isinstance(url, URL):
        return url
    try:
        return make_url(url)
    except exc.ArgumentError:
        # The URL text may hold a password: do not echo it.
        raise ConfigError(
            "store", "url", "not a database URL (sqlite:///path or postgresql://...)"
        ) from None


def normalise_url(url: str | URL) -> URL:
    """Upgrade `sqlite:///x` / `postgresql://...` to the async drivers; reject other backends."""
    parsed = _parse(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigError(
            "store",
            "url",
            f"unsupported database {parsed.drivername!r}: use sqlite:///path or postgresql://...",
        )
    return parsed.set(drivername=driver)


def safe_url(url: str | URL) -> str:
    """The URL as the admin wrote it, minus the password: fit for logs and for hints.

    Dropping (not masking) the password keeps the text runnable: asyncpg falls back to
    PGPASSWORD / ~/.pgpass.
    """
    try:
        parsed = _parse(url)
    except ConfigError:
        return "<invalid database URL>"
    # URL.set() treats None as "unchanged": replace the field itself.
    return parsed._replace(password=None).render_as_string(hide_password=False)


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None for in-memory / URI-mode databases."""
    if not url.drivername.startswith("sqlite"):
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    # Python's sqlite3 never BEGINs before DDL, so migrations would autocommit statement
    # by statement; hand transaction control to SQLAlchemy instead (_sqlite_on_begin).
    dbapi_conn.isolation_level = None
    # busy_timeout makes concurrent writers (one worker per core) wait instead of failing
    # at once. WAL lets the daemon's readers run while a writer commits.
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as e:
            # Two connections racing on a brand-new file: the switch needs an exclusive
            # lock and SQLite reports BUSY without waiting. WAL is stored in the file, so
            # the connection holding the lock sets it for everyone.
            if e.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
    if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise ValueError(f"{SQLITE_BEGIN}={mode!r}")
    conn.exec_driver_sql(f"BEGIN {mode}")


def create_sync_sqlite_engine(url: URL, *, pool_size: int) -> Engine:
    """A synchronous engine on the same SQLite file as `url`, with the same settings
    (busy timeout, WAL, SQLAlchemy-controlled BEGIN), for threads that run whole reads or
    write batches in one go (store.database). Its connections may move between threads."""
    engine = sa_create_engine(url.set(drivername="sqlite"), pool_size=pool_size,
                              max_overflow=pool_size)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def create_engine(url: str | URL, *, pool_size: int = 5, echo: bool = False) -> AsyncEngine:
    """An AsyncEngine tuned for the backend; the caller owns it and must `dispose()` it.

    Does not connect: connection errors surface on first use (see `translate_errors`).
    """
    parsed = normalise_url(url)
    where = safe_url(parsed)
    if parsed.drivername.startswith("sqlite"):
        path = sqlite_path(parsed)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise TemporaryError(
                    f"store: cannot create directory {path.parent} for {where}: "
                    f"{e.strerror or type(e).__name__}"
                ) from None
        engine = create_async_engine(parsed, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    return create_async_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=2 * pool_size,
        pool_timeout=PG_POOL_TIMEOUT_S,
        pool_pre_ping=True,  # a restarted/failed-over server must not cost a message
        pool_recycle=1800,
        connect_args={"timeout": PG_CONNECT_TIMEOUT_S},
    )


def _describe(error: BaseException) -> str:
    """Short reason: the driver's message without SQLAlchemy's SQL/parameter dump."""
    orig = error.orig if isinstance(error, exc.DBAPIError) else None
    inner: BaseException = orig if isinstance(orig, BaseException) else error
    text = str(inner).strip().splitlines()
    first = text[0] if text else ""
    name = type(inner).__name__
    return f"{name}: {first}" if first else name


@contextlib.contextmanager
def translate_errors(op: str, url: str | URL) -> Iterator[None]:
    """Turn database and connection failures into TemporaryError naming the operation.

    Every failure counts as temporary: for mail the safe answer to a broken store is
    451/tempfail, never a silent accept. The password never appears in the message.
    Text the database cannot take (an address with non-UTF-8 bytes, kept as surrogate
    escapes) fails here too: asyncpg reports it as a DBAPIError, sqlite3 as a bare
    UnicodeEncodeError, which would otherwise escape every failure policy. sqlite3's
    own errors come from the raw hot-path reads (Database.read).
    """
    try:
        yield
    except (exc.SQLAlchemyError, sqlite3.Error, OSError, UnicodeEncodeError) as e:
        message = f"store: {op} failed on {safe_url(url)}: {_describe(e)}"
        with contextlib.suppress(ConfigError):
            password = _parse(url).password
            if password:
                message = message.replace(str(password), "***")
        raise TemporaryError(message) from e
