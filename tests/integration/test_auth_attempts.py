"""The shared SMTP AUTH attempt count (store.auth_attempts) on SQLite and PostgreSQL:
reservations are atomic also between separate engines (as between worker processes and
MX hosts), a release gives one back, the previous window counts, old windows are purged."""

from __future__ import annotations

import asyncio

from mailguard.store.auth_attempts import AuthAttemptStore, window_no
from mailguard.store.repo import Store

IP = "192.0.2.50"


def test_window_no() -> None:
    assert window_no(0.0, 600) == 0
    assert window_no(599.9, 600) == 0
    assert window_no(600.0, 600) == 1


async def test_reservations_stop_at_the_limit(store: Store) -> None:
    repo = AuthAttemptStore(store.db)
    assert [await repo.reserve(IP, 10, 3) for _ in range(4)] == [1, 2, 3, None]
    assert await repo.count(IP, 10) == 3
    await repo.release(IP, 10)  # a success gives its reservation back
    assert await repo.reserve(IP, 10, 3) == 3
    assert await repo.reserve("192.0.2.51", 10, 3) == 1  # another address: its own count


async def test_the_previous_window_counts(store: Store) -> None:
    repo = AuthAttemptStore(store.db)
    assert await repo.reserve(IP, 10, 3) == 1
    assert await repo.reserve(IP, 10, 3) == 2
    assert await repo.reserve(IP, 11, 3) == 3  # 2 in window 10 + this one
    assert await repo.reserve(IP, 11, 3) is None
    assert await repo.reserve(IP, 12, 3) == 2  # window 10 no longer counts
    assert await repo.count(IP, 12) == 2


async def test_purge_deletes_old_windows(store: Store) -> None:
    repo = AuthAttemptStore(store.db)
    for window in (5, 6, 7):
        await repo.reserve(IP, window, 3)
    assert await repo.purge(6) == 1
    assert await repo.count(IP, 6) == 1
    assert await repo.count(IP, 7) == 2


async def test_parallel_reservations_from_several_engines_never_exceed_the_limit(
        db_url: str) -> None:
    """Four separately opened stores (each its own engine and write queue, as four
    processes) reserve 60 attempts at once for one address: exactly the limit succeed."""
    stores = [await Store.open(db_url) for _ in range(4)]
    try:
        repos = [AuthAttemptStore(s.db) for s in stores]
        got = await asyncio.gather(*(repos[i % 4].reserve(IP, 42, 5) for i in range(60)))
        assert sorted(n for n in got if n is not None) == [1, 2, 3, 4, 5]
        assert await repos[0].count(IP, 42) == 5
    finally:
        for s in stores:
            await s.close()
