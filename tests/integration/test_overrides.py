"""The override store (table ip_override) on a real SQLite file and the real PostgreSQL,
and the daemon-side cache that reads it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from sqlalchemy import text

from mailguard.clock import FrozenClock
from mailguard.errors import TemporaryError
from mailguard.store import migrate
from mailguard.store.overrides import OverrideCache, OverrideStore
from mailguard.store.repo import Store

NOW = 1_800_000_000.0


async def test_add_list_replace_remove(store: Store) -> None:
    repo = OverrideStore(store.db)
    added = await repo.add("192.0.2.0/24", "allow", reason="partner", now=NOW,
                           created_by="admin")
    assert (added.network, added.action, added.expires_ts) == ("192.0.2.0/24", "allow", None)
    await repo.add("2001:DB8::/32", "deny", reason="spam", now=NOW, expires_ts=NOW + 60)
    await repo.add("192.0.2.0/24", "deny", reason="changed", now=NOW + 1)  # replaces
    entries = await repo.list()
    assert [(e.network, e.action, e.reason, e.expires_ts) for e in entries] == [
        ("192.0.2.0/24", "deny", "changed", None),
        ("2001:db8::/32", "deny", "spam", NOW + 60),
    ]
    assert await repo.remove("192.0.2.0/24", now=NOW) is True
    assert await repo.remove("192.0.2.0/24", now=NOW) is False
    assert [e.network for e in await repo.list()] == ["2001:db8::/32"]
    with pytest.raises(ValueError, match="host bits"):
        await repo.add("192.0.2.1/24", "allow", now=NOW)


async def test_cache_matches_refreshes_and_ignores_expired(store: Store) -> None:
    repo = OverrideStore(store.db)
    clock = FrozenClock(NOW)
    cache = OverrideCache(repo, clock, refresh_s=5)
    await repo.add("192.0.2.0/24", "allow", now=NOW)
    await repo.add("192.0.2.128/25", "deny", now=NOW, expires_ts=NOW + 30)
    client = ipaddress.ip_address("192.0.2.200")
    found = await cache.match(client)
    assert found is not None and found.action == "deny"
    await repo.remove("192.0.2.0/24", now=NOW)
    # an edit through the store is seen by the next lookup, however fresh the copy
    assert (await cache.match(ipaddress.ip_address("192.0.2.1"))) is None
    clock.advance(30)  # the deny expired: ignored
    assert (await cache.match(client)) is None


async def test_cache_sees_every_edit_at_once_and_hand_edits_within_refresh(
        store: Store) -> None:
    """Another host's (another OverrideStore's) add/remove changes the generation token:
    the next lookup reloads. A row written by hand without it waits for refresh_s."""
    clock = FrozenClock(NOW)
    cache = OverrideCache(OverrideStore(store.db), clock, refresh_s=5)
    other_host = OverrideStore(store.db)
    client = ipaddress.ip_address("198.51.100.7")
    assert await cache.match(client) is None
    await other_host.add("198.51.100.0/24", "deny", now=NOW)
    found = await cache.match(client)
    assert found is not None and found.action == "deny"
    await other_host.remove("198.51.100.0/24", now=NOW)
    assert await cache.match(client) is None
    async with store.db.transaction() as conn:
        await conn.execute(text(
            "INSERT INTO ip_override (network, action, reason, created_ts, created_by) "
            "VALUES ('198.51.100.0/24', 'allow', 'by hand', 0, '')"))
    clock.advance(4)
    assert await cache.match(client) is None  # within refresh_s: the copy answers
    clock.advance(1)
    found = await cache.match(client)
    assert found is not None and found.action == "allow"


async def test_cache_keeps_a_recent_copy_when_the_store_fails(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/mailguard.db"
    await migrate.upgrade(url)
    store = await Store.open(url)
    clock = FrozenClock(NOW)
    repo = OverrideStore(store.db)
    cache = OverrideCache(repo, clock, refresh_s=5, max_stale_s=60)
    await repo.add("192.0.2.0/24", "allow", now=NOW)
    assert await cache.match(ipaddress.ip_address("192.0.2.1")) is not None
    async with store.engine.begin() as conn:  # the table vanishes: reads now fail
        await conn.execute(text("DROP TABLE ip_override"))
    try:
        clock.advance(30)
        assert await cache.match(ipaddress.ip_address("192.0.2.1")) is not None
        clock.advance(31)  # older than max_stale_s: an error, not stale data
        with pytest.raises(TemporaryError, match="listing overrides"):
            await cache.match(ipaddress.ip_address("192.0.2.1"))
        fresh = OverrideCache(repo, clock)  # never loaded: an error at once
        with pytest.raises(TemporaryError):
            await fresh.match(ipaddress.ip_address("192.0.2.1"))
    finally:
        await store.close()
