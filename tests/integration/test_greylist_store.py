"""The greylisting tables on a real SQLite file and the real PostgreSQL: read-decide-write
in one transaction, concurrent hosts on one triplet, purge, stats, allow."""

from __future__ import annotations

import asyncio

import pytest

from mailguard.checks.greylist_rules import Decision, Result, decide
from mailguard.errors import TemporaryError
from mailguard.settings.greylist import GreylistConfig
from mailguard.store.greylist import Decide, GreylistStore
from mailguard.store.greylist_records import ClientState, TripletState
from mailguard.store.repo import Store

T0 = 1_800_000_000.0
CFG = GreylistConfig()
KEY, SENDER, RCPT = "192.0.2.0/24", "alice@example.org", "bob@example.com"


def at(now: float, cfg: GreylistConfig = CFG) -> Decide[Decision]:
    """The pure decision as the store's callback."""

    def run(entry: TripletState | None, client: ClientState | None
            ) -> tuple[TripletState | None, ClientState | None, Decision]:
        d = decide(entry, client, now, cfg)
        return d.entry, d.client, d

    return run


async def test_update_reads_decides_and_writes(store: Store) -> None:
    repo = GreylistStore(store.db)
    first = await repo.update(KEY, SENDER, RCPT, at(T0))
    assert (first.result, first.wait_s) == (Result.DEFERRED, 300)
    early = await repo.update(KEY, SENDER, RCPT, at(T0 + 100))
    assert (early.result, early.wait_s) == (Result.DEFERRED, 200)
    ok = await repo.update(KEY, SENDER, RCPT, at(T0 + 301))
    assert (ok.result, ok.delayed_s) == (Result.PASSED, 301)
    again = await repo.update(KEY, SENDER, RCPT, at(T0 + 900))
    assert (again.result, again.delayed_s) == (Result.PASSED, None)
    [row] = await repo.triplets()
    assert (row.client_key, row.sender, row.rcpt) == (KEY, SENDER, RCPT)
    # within the hour a passed triplet is read, not rewritten
    assert row.state == TripletState(T0, T0 + 301, T0 + 301, 2)
    await repo.update(KEY, SENDER, RCPT, at(T0 + 301 + 3600))
    [row] = await repo.triplets()
    assert row.state == TripletState(T0, T0 + 301 + 3600, T0 + 301, 2)
    assert await repo.client(KEY) == ClientState(1, T0 + 301, T0 + 301)
    other = await repo.update(KEY, SENDER, "carol@example.com", at(T0 + 900))
    assert other.result is Result.DEFERRED  # another recipient is another triplet


async def test_stats_allow_and_purge(store: Store) -> None:
    repo = GreylistStore(store.db)
    await repo.update(KEY, SENDER, RCPT, at(T0))
    await repo.update(KEY, SENDER, RCPT, at(T0 + 400))  # passed
    await repo.update("198.51.100.0/24", "x@spam.example", RCPT, at(T0 + 10))  # pending
    await repo.update("203.0.113.0/24", "y@old.example", RCPT, at(T0 - 40 * 86400))
    assert await repo.allow("2001:db8::/64", 5, T0) == ClientState(5, T0, T0)
    stats = await repo.stats(5)
    assert (stats.triplets, stats.passed, stats.pending, stats.clients, stats.whitelisted) == (
        3, 1, 2, 2, 1)
    # allow never lowers a count
    await repo.update("2001:db8::/64", "z@example.net", RCPT, at(T0))
    assert (await repo.allow(KEY, 5, T0 + 1)).passes == 5
    assert (await repo.allow(KEY, 3, T0 + 2)).passes == 5
    # purge: the 40-day-old pending triplet, and (with the retry window) the pending one
    purged = await repo.purge(T0 + 49 * 3600 + 10, 35 * 86400, 48 * 3600)
    assert purged == (2, 0)
    assert [(r.client_key, r.state.passed_ts is not None) for r in await repo.triplets()] == [
        (KEY, True)]
    assert await repo.purge(T0 + 400 + 35 * 86400 + 1, 35 * 86400, 48 * 3600) == (1, 2)
    assert await repo.triplets() == []
    stats = await repo.stats(5)
    assert (stats.triplets, stats.clients) == (0, 0)


async def test_concurrent_hosts_on_one_triplet(db_url: str) -> None:
    """Two MX hosts (two engines) hit one new triplet at once, then retry at once: every
    first try is deferred and counted, exactly one retry carries the delay header, and
    the client's pass is counted once."""
    host_a, host_b = await Store.open(db_url), await Store.open(db_url)
    try:
        repos = [GreylistStore(host_a.db), GreylistStore(host_b.db)]
        first = await asyncio.gather(
            *(repos[i % 2].update(KEY, SENDER, RCPT, at(T0 + i * 0.01)) for i in range(10)))
        assert {d.result for d in first} == {Result.DEFERRED}
        [row] = await repos[0].triplets()
        assert row.state.deferrals == 10
        assert T0 <= row.state.first_seen <= T0 + 0.1
        retry = await asyncio.gather(
            *(repos[i % 2].update(KEY, SENDER, RCPT, at(T0 + 400)) for i in range(10)))
        assert {d.result for d in retry} == {Result.PASSED}
        assert sum(d.delayed_s is not None for d in retry) == 1
        assert await repos[1].client(KEY) == ClientState(1, T0 + 400, T0 + 400)
    finally:
        await host_a.close()
        await host_b.close()


async def test_store_failure_is_temporary(store_url: str) -> None:
    """A database without the tables (or down): TemporaryError, for the runner's on_error,
    on both backends' fast read paths (sqlite3's and asyncpg's errors alike)."""
    store = await Store.open(store_url, check_schema=False)
    try:
        with pytest.raises(TemporaryError, match="greylist update failed"):
            await GreylistStore(store.db).update(KEY, SENDER, RCPT, at(T0))
    finally:
        await store.close()
