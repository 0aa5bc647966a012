"""One engine plus this process's write path: the object every repository is built on.

SQLite lets one writer at a time hold a file. Left to itself, every pooled connection of a
busy daemon waits in SQLite's busy handler, which sleeps and polls: under 16 concurrent
SMTP sessions some waiters lose every race for seconds and fail with `database is locked`,
which a check turns into 451. So on SQLite this process's writers queue in asyncio instead
(one `asyncio.Lock`, first come first served), each write transaction takes the file lock
up front (`BEGIN IMMEDIATE`, no read-then-upgrade failures), and the hot path's small
writes (`batched`) share one transaction and one commit. Only other processes (worker
processes, the CLI, another web host) still meet in SQLite's busy handler, and there are
few of them. Reads never take the lock: in WAL mode they run beside the writer.

The hot path's work (`read`, `batched`) is plain synchronous SQLAlchemy Core. On a SQLite
file it runs in threads of our own on a synchronous engine: a whole read or a whole batch
of writes costs one hand-off to a thread, where aiosqlite costs about four per statement,
each a turn of a busy event loop. On PostgreSQL it runs on the async engine
(`run_sync`): rows are locked, not the database, so writes run concurrently, each in its
own transaction, and a lost first-insert race (IntegrityError) is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import PoolProxiedConnection

from mailguard.store.engine import SQLITE_BEGIN, create_sync_sqlite_engine, sqlite_path

T = TypeVar("T")
Work = Callable[[Connection], T]  # synchronous Core code on one connection
RawWork = Callable[[PoolProxiedConnection], T]  # the same as SQL on a sqlite3 connection
PgWork = Callable[[Any], Awaitable[T]]  # the same as SQL on an asyncpg connection

log = logging.getLogger("mailguard.store")

BATCH_MAX = 256  # items per shared transaction; more wait for the next round
INSERT_RACE_ATTEMPTS = 3  # PostgreSQL: a lost first-insert race costs one more round
READER_THREADS = 4  # SQLite reads in flight at once (each one short)
CLOSE_TIMEOUT_S = 5.0  # closing pooled connections; a hung server's are abandoned


@dataclass(slots=True)
class _Item(Generic[T]):
    work: Work[T]
    future: asyncio.Future[T]


class Database:
    """`engine` and `read()` for reads; `transaction()`, `session()`, `batched()` for
    writes. Built once per process and engine; `close()` it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.url: URL = engine.url
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._writer = engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        self._lock = asyncio.Lock() if self.is_sqlite else None
        self._sessions = async_sessionmaker(self._writer, expire_on_commit=False)
        self._pending: list[_Item[Any]] = []
        self._drainer: asyncio.Task[None] | None = None
        # SQLite file: a synchronous engine and threads of our own for read() / batched()
        self._sync: Engine | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._write_pool: ThreadPoolExecutor | None = None
        # raw DBAPI connections of read(raw=...), at most one per reader thread
        self._raw: queue.SimpleQueue[PoolProxiedConnection] = queue.SimpleQueue()
        if self.is_sqlite and sqlite_path(engine.url) is not None:
            self._sync = create_sync_sqlite_engine(engine.url, pool_size=READER_THREADS + 1)
            self._read_pool = ThreadPoolExecutor(READER_THREADS, "mailguard-db-read")
            self._write_pool = ThreadPoolExecutor(1, "mailguard-db-write")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (commits on success, rolls back on error)."""
        async with self._turn(), self._writer.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """An ORM session in a write transaction (commits on success)."""
        async with self._turn(), self._sessions.begin() as session:
            yield session

    async def read(self, work: Work[T], *, raw: RawWork[T] | None = None,
                   pg: PgWork[T] | None = None) -> T:
        """`work(conn)` on a read-only transaction, in one hand-off.

        `raw`, the same read written as plain SQL on a sqlite3 connection, replaces it
        on a SQLite file: for the hot path's lookups SQLAlchemy's connection checkout,
        BEGIN, statement execution and ROLLBACK cost 25 times the lookups themselves
        (about 0.3 ms against 15 µs). Its connections are in autocommit mode, so each
        statement is its own WAL snapshot: `raw` must not need two consistent ones.
        `pg`, the same as one statement on the pooled asyncpg connection, replaces it on
        PostgreSQL (0.5 ms per greylist lookup instead of 1.2: no run_sync, BEGIN or
        ROLLBACK); the driver's errors become SQLAlchemy's, for translate_errors."""
        if self._sync is None:
            async with self.engine.connect() as conn:
                if pg is None or self.is_sqlite:
                    return await conn.run_sync(work)
                driver = (await conn.get_raw_connection()).driver_connection
                try:
                    return await pg(driver)
                except Exception as exc:
                    if type(exc).__module__.startswith("asyncpg"):
                        raise OperationalError("asyncpg read", None, exc) from exc
                    raise
        sync = self._sync

        def run() -> T:
            with sync.connect() as conn:
                return work(conn)

        def run_raw() -> T:
            assert raw is not None
            try:
                conn = self._raw.get_nowait()
            except queue.Empty:
                conn = sync.raw_connection()
            try:
                result = raw(conn)
            except BaseException:
                conn.close()  # back to SQLAlchemy's pool, which resets it
                raise
            self._raw.put(conn)
            return result

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, run if raw is None else run_raw)

    async def batched(self, work: Work[T]) -> T:
        """Run `work(conn)` in a write transaction, possibly shared with other callers'
        work (SQLite: one commit for everything that queued up during the last one).

        `work` must only touch the database and may run more than once (after a shared
        transaction failed, every item is retried alone so one bad item cannot fail the
        others). Its result is returned once its transaction has committed.
        """
        if self._lock is None:
            return await self._alone(work)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(work, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future  # cancelled by our caller: the drainer skips it

    async def close(self) -> None:
        """Finish queued work, then close pooled connections and threads."""
        if self._drainer is not None:
            with contextlib.suppress(Exception):
                await self._drainer
        for pool in (self._read_pool, self._write_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        while not self._raw.empty():
            self._raw.get_nowait().close()
        if self._sync is not None:
            self._sync.dispose()
        try:
            await asyncio.wait_for(self.engine.dispose(), CLOSE_TIMEOUT_S)
        except TimeoutError:  # a server that stopped answering must not block an exit
            log.warning("event=store_close_timeout timeout_s=%g connections=abandoned",
                        CLOSE_TIMEOUT_S)

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._lock is None:
            yield
            return
        async with self._lock:
            yield

    async def _alone(self, work: Work[T]) -> T:
        """`work` in a transaction of its own."""
        for attempt in range(1, INSERT_RACE_ATTEMPTS + 1):
            try:
                if self._sync is None:
                    async with self.transaction() as conn:
                        return await conn.run_sync(work)
                results = await self._in_writer([work])
                return results[0]  # type: ignore[no-any-return]
            except IntegrityError:
                if self.is_sqlite or attempt == INSERT_RACE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _in_writer(self, works: list[Work[Any]]) -> list[Any]:
        """Every `work` in one IMMEDIATE transaction on the writer thread."""
        assert self._sync is not None and self._lock is not None
        sync = self._sync.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})

        def run() -> list[Any]:
            with sync.begin() as conn:
                return [work(conn) for work in works]

        async with self._lock:
            return await asyncio.get_running_loop().run_in_executor(self._write_pool, run)

    async def _shared(self, works: list[Work[Any]]) -> list[Any]:
        if self._sync is not None:
            return await self._in_writer(works)

        def run(conn: Connection) -> list[Any]:
            return [work(conn) for work in works]

        async with self.transaction() as conn:
            return await conn.run_sync(run)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:BATCH_MAX], self._pending[BATCH_MAX:]
            batch = [item for item in batch if not item.future.done()]
            if not batch:
                continue
            try:
                results = await self._shared([item.work for item in batch])
            except Exception as exc:  # one item (or the commit) failed: each goes alone
                if len(batch) > 1:
                    log.debug("event=store_batch_retry items=%d error=%r", len(batch), str(exc))
                await self._one_by_one(batch, exc if len(batch) == 1 else None)
                continue
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    async def _one_by_one(self, batch: list[_Item[Any]], known: Exception | None) -> None:
        for item in batch:
            if item.future.done():
                continue
            if known is not None:
                item.future.set_exception(known)
                continue
            try:
                result = await self._alone(item.work)
            except Exception as exc:
                if not item.future.done():
                    item.future.set_exception(exc)
            else:
                if not item.future.done():
                    item.future.set_result(result)
