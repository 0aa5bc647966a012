"""Write contention inside one process: many sessions writing while the event loop is busy.

Under load the event loop takes a while to come back to each awaiting task, and a write
transaction awaits once per statement. When every pooled connection waited for SQLite's
file lock in SQLite's own busy handler (sleep and poll), the waiters starved past the busy
timeout and the daemon answered 451 `database is locked`. The store now queues this
process's writers in asyncio and lets them share commits; nobody fails."""

from __future__ import annotations

import asyncio
import time

from mailguard.checks.greylist_rules import Result
from mailguard.settings.greylist import GreylistConfig
from mailguard.store.greylist import GreylistStore
from mailguard.store.repo import Store
from tests.integration.test_greylist_store import T0, at

WRITERS = 60
BUSY_LOOP_S = 0.02  # each turn of the event loop costs this much (other sessions' work)


async def busy_loop(stop: asyncio.Event) -> None:
    while not stop.is_set():
        time.sleep(BUSY_LOOP_S)  # noqa: ASYNC251 - blocking on purpose: a loaded loop
        await asyncio.sleep(0)


async def test_many_writers_on_a_busy_loop_all_succeed(store: Store) -> None:
    repo = GreylistStore(store.db)
    cfg = GreylistConfig(delay_s=0)  # every first try passes: each update is a write
    stop = asyncio.Event()
    hog = asyncio.create_task(busy_loop(stop))
    try:
        decisions = await asyncio.gather(
            *(repo.update(f"192.0.2.{n}", "a@example.org", "b@example.com", at(T0, cfg))
              for n in range(WRITERS)))
    finally:
        stop.set()
        await hog
    assert {d.result for d in decisions} == {Result.PASSED}
    assert (await repo.stats(5)).triplets == WRITERS
