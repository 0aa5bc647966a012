"""Store fixtures shared by the integration tests (see databases.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailguard.store.repo import Store
from tests.integration.databases import BACKENDS, empty_database, migrated_url


@pytest.fixture(params=BACKENDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database; SQLite's file lies in a directory that does not exist yet."""
    async with empty_database(request, tmp_path / "state" / "mailguard.db") as url:
        yield url


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database on each backend."""
    async with migrated_url(request, tmp_path) as url:
        yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """An open Store on a migrated, empty database (each backend)."""
    opened = await Store.open(db_url)
    try:
        yield opened
    finally:
        await opened.close()
