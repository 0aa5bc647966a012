#!/usr/bin/env python3
"""Greylist and per-user limits decision latency on a big store (issue 13): 1,000,000
greylist triplets (and 200,000 clients), 1,000,000 outbound events of 10,000 users, on
SQLite (default) and, with `--pg URL` (an empty database), PostgreSQL.

Each figure is the time of the check's store work for one decision, through the same
code the daemon runs (GreylistCheck.evaluate with a fresh per-process cache, so every
decision goes to the store; UserStore.usage for the limits windows), one at a time and
16 at once; p50 / p99 / max in milliseconds. The issue's target: greylist p99 ≤ 2 ms.

    .venv/bin/python bench/decision_latency.py [--triplets 1000000] [--pg URL]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailguard.checks.greylist import GreylistCheck  # noqa: E402
from mailguard.clock import SystemClock  # noqa: E402
from mailguard.context import Session, Transaction  # noqa: E402
from mailguard.metrics import Metrics  # noqa: E402
from mailguard.settings.greylist import GreylistConfig  # noqa: E402
from mailguard.store import migrate  # noqa: E402
from mailguard.store.greylist import GreylistStore  # noqa: E402
from mailguard.store.repo import Store  # noqa: E402
from mailguard.store.users import UserStore  # noqa: E402
from mailguard.verdict import Stage  # noqa: E402

PERIODS = [3600, 86400]


def triplet(i: int) -> tuple[str, str, str]:
    net = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.0/24"
    return net, f"sender{i % 50_000}@example.org", f"rcpt{i % 20_000}@example.com"


def rows(n: int, now: float) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    greylist = []
    for i in range(n):
        key, sender, rcpt = triplet(i)
        greylist.append((key, sender, rcpt, now - 7200, now - 600, now - 3000, 1))
    events = [(f"user{i % 10_000}@example.com", now - (i % 86_000), 1, 1, "example.org", "s")
              for i in range(n)]
    return greylist, events


async def fill(url: str, n: int, now: float) -> None:
    await migrate.upgrade(url)
    greylist, events = rows(n, now)
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1])
        conn.executemany("INSERT INTO greylist (client_key, sender, rcpt, first_seen, "
                         "last_seen, passed_ts, deferrals) VALUES (?,?,?,?,?,?,?)", greylist)
        conn.executemany('INSERT INTO user_event ("user", ts, messages, rcpts, rcpt_domains, '
                         "subject) VALUES (?,?,?,?,?,?)", events)
        conn.commit()
        conn.close()
        return
    import asyncpg  # noqa: PLC0415

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "greylist", records=greylist, columns=["client_key", "sender", "rcpt",
                                                   "first_seen", "last_seen", "passed_ts",
                                                   "deferrals"])
        await conn.copy_records_to_table(
            "user_event", records=events, columns=["user", "ts", "messages", "rcpts",
                                                   "rcpt_domains", "subject"])
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def session_for(i: int, clock: SystemClock) -> Session:
    key, sender, rcpt = triplet(i)
    ip = ipaddress.ip_address(key.split("/")[0].rsplit(".", 1)[0] + ".7")
    s = Session(ip, 25, clock, session_id="b")
    s.transaction = Transaction(sender, rcpt=rcpt)
    return s


async def timed(coros: list[object], parallel: int) -> list[float]:
    out: list[float] = []
    sem = asyncio.Semaphore(parallel)

    async def one(c: object) -> None:
        async with sem:
            t = time.perf_counter()
            await c  # type: ignore[misc]
            out.append((time.perf_counter() - t) * 1000)

    await asyncio.gather(*(one(c) for c in coros))
    return out


def line(name: str, ms: list[float]) -> str:
    ms.sort()
    p99 = ms[max(0, int(len(ms) * 0.99) - 1)]
    return f"{name:52} {statistics.median(ms):8.2f} {p99:8.2f} {ms[-1]:8.2f}"


async def measure(url: str, n: int, samples: int) -> None:
    store = await Store.open(url)
    clock = SystemClock()
    cfg = GreylistConfig(key="net")
    try:
        rng = random.Random(1)
        print(f"{'decision':52} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for parallel in (1, 16):
            check = GreylistCheck(cfg, GreylistStore(store.db), Metrics())
            known = [check.evaluate(Stage.RCPT, session_for(rng.randrange(n), clock))
                     for _ in range(samples)]
            print(line(f"greylist, passed triplet (store read), {parallel} at once",
                       await timed(known, parallel)))
            check = GreylistCheck(cfg, GreylistStore(store.db), Metrics())
            new = [check.evaluate(Stage.RCPT, session_for(n + parallel * samples + i, clock))
                   for i in range(samples)]
            print(line(f"greylist, new triplet (deferred, written), {parallel} at once",
                       await timed(new, parallel)))
            users = UserStore(store.db)
            now = clock.now()
            usage = [users.usage(f"user{rng.randrange(10_000)}@example.com", now, PERIODS)
                     for _ in range(samples)]
            print(line(f"limits, windows of a user (store read), {parallel} at once",
                       await timed(usage, parallel)))
    finally:
        await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--triplets", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--pg", help="an empty PostgreSQL database URL (postgresql+asyncpg://…)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.pg or f"sqlite+aiosqlite:///{tmp}/mailguard.db"
        t = time.perf_counter()
        asyncio.run(fill(url, args.triplets, time.time()))
        print(f"{url.partition(':')[0]}: {args.triplets} triplets and user events "
              f"loaded in {time.perf_counter() - t:.0f}s")
        asyncio.run(measure(url, args.triplets, args.samples))


if __name__ == "__main__":
    main()
