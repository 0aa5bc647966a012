"""Web sessions and login throttling in the store, on SQLite and the real PostgreSQL:
attempts are counted before the password is checked, atomically across two web hosts."""

from __future__ import annotations

import asyncio

from mailguard.store.repo import Store
from mailguard.store.web_sessions import WebSessionStore

T0 = 1_800_000_000.0


async def test_parallel_attempts_on_two_hosts_never_exceed_the_limit(db_url: str) -> None:
    hosts = [await Store.open(db_url), await Store.open(db_url)]
    try:
        repos = [WebSessionStore(h.db) for h in hosts]
        limits = {"ip:192.0.2.1": 100, "user:joe@example.com": 5}
        got = await asyncio.gather(*(repos[i % 2].begin_login(limits, T0, 900)
                                     for i in range(20)))
        assert sum(ids is not None for ids in got) == 5  # in flight counts too
        # a success forgets the account's failures: the account may try again
        first = next(ids for ids in got if ids is not None)
        await repos[0].end_login(first, success=True, account_key="user:joe@example.com",
                                 now=T0)
        assert await repos[1].begin_login(limits, T0 + 1, 900) is not None
        # past the window the old attempts no longer count
        assert await repos[1].begin_login({"user:ann@example.com": 1}, T0, 900) is not None
        assert await repos[1].begin_login({"user:ann@example.com": 1}, T0 + 10, 900) is None
        assert await repos[1].begin_login({"user:ann@example.com": 1}, T0 + 901, 900) \
            is not None
    finally:
        for h in hosts:
            await h.close()


async def test_session_expiry_and_delete(store: Store) -> None:
    repo = WebSessionStore(store.db)
    token, rec = await repo.create("joe@example.com", T0)
    assert await repo.get(token, T0 + 100, idle_s=1800, max_s=43200) == rec
    assert await repo.get("other", T0, idle_s=1800, max_s=43200) is None
    # used every 20 minutes: alive until the absolute limit
    for t in range(1200, 43200, 1200):
        assert await repo.get(token, T0 + t, idle_s=1800, max_s=43200) is not None
    assert await repo.get(token, T0 + 43201, idle_s=1800, max_s=43200) is None
    idle, _ = await repo.create("joe@example.com", T0)
    assert await repo.get(idle, T0 + 1801, idle_s=1800, max_s=43200) is None
    gone, _ = await repo.create("joe@example.com", T0)
    await repo.delete(gone)
    assert await repo.get(gone, T0, idle_s=1800, max_s=43200) is None
