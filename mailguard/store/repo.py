"""The Store: one engine per process, repositories as methods.

Built once at start-up and passed down (no module-level state). Every database
failure leaves as TemporaryError, so a check's failure policy decides what happens.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from mailguard.store.database import Database
from mailguard.store.engine import create_engine
from mailguard.store.migrate import check_revision, missing_sqlite_file, revision_on


class Store:
    """State in SQL. Open with `await Store.open(url)`, finish with `await store.close()`."""

    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self._engine = engine
        self._url = url
        self.db = Database(engine)  # what repositories are built on (writes go through it)
        # expire_on_commit=False: rows stay readable after commit without another query.
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str, *, check_schema: bool = True) -> Store:
        """Create the engine and, unless told not to, refuse an out-of-date schema.

        Raises SchemaOutOfDate (admin must run `mailguard db upgrade`) or TemporaryError.
        """
        if check_schema and missing_sqlite_file(url):
            check_revision(None, url)  # raises; creates no file or directory on the way
        engine = create_engine(url)
        try:
            if check_schema:
                check_revision(await revision_on(engine, url), url)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, url)

    @property
    def engine(self) -> AsyncEngine:
        """For later repositories in this package; other packages use Store methods."""
        return self._engine

    async def close(self) -> None:
        """Close pooled connections (drivers warn about connections left open)."""
        await self.db.close()
