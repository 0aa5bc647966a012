"""Fresh databases for store tests: every test gets its own, on SQLite and on the real
PostgreSQL (a uniquely named database created and dropped around the test)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from mailguard.store import migrate
from mailguard.store.engine import create_engine

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)]


async def pg_admin(server_url: str, sql: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE)."""
    engine = create_engine(server_url)
    try:
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(text(sql))
    finally:
        await engine.dispose()


@asynccontextmanager
async def empty_database(request: pytest.FixtureRequest, sqlite_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database on the backend named by `request.param`."""
    if request.param == "sqlite":
        yield f"sqlite:///{sqlite_path}"
        return
    server: str = request.getfixturevalue("pg_url")
    name = f"mg_test_{uuid.uuid4().hex[:16]}"
    await pg_admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        await pg_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a migrated, empty database on the backend named by `request.param`."""
    async with empty_database(request, tmp_path / "mailguard.db") as url:
        await migrate.upgrade(url)
        yield url
