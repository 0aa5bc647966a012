"""One store for several daemons in a test: a SQLite file, or a fresh PostgreSQL
database created and dropped around the test (as several MX hosts on one database)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.e2e.daemon_harness import upgrade_store
from tests.integration.databases import pg_admin

KINDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)]


@contextmanager
def shared_store(kind: str, tmp: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a migrated store every daemon of the test is pointed at."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp}/shared.db"
        upgrade_store(url)
        yield url
        return
    server: str = request.getfixturevalue("pg_url")
    name = f"mg_hosts_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg_admin(server, f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        upgrade_store(url)
        yield url
    finally:
        asyncio.run(pg_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
