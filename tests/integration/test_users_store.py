"""The per-user tables on a real SQLite file and the real PostgreSQL: sliding-window
sums, pruning, suspension, the one-alert-per-incident claim, reports, the panic switch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from mailguard.store.engine import create_engine
from mailguard.store.models import UserEvent
from mailguard.store.repo import Store
from mailguard.store.user_records import WindowCount
from mailguard.store.users import UserStore

T0 = 1_800_000_000.0
PERIODS = [3600, 86400]


@pytest.fixture
def users_url(db_url: str) -> str:
    """A migrated database: a SQLite file, or a fresh database on the real PostgreSQL."""
    return db_url


@pytest.fixture
async def users(users_url: str) -> AsyncIterator[UserStore]:
    store = await Store.open(users_url)
    try:
        yield UserStore(store.db)
    finally:
        await store.close()


async def add(users: UserStore, user: str, ts: float, *, rcpts: int = 1,
              domains: tuple[str, ...] = ("example.org",), subject: str = "hi") -> None:
    await users.record_event(user, ts, rcpts, domains=domains, subject=subject, keep_s=86400)


async def test_window_sums_slide(users: UserStore) -> None:
    await add(users, "alice", T0, rcpts=3)
    await add(users, "alice", T0 + 1800, rcpts=2)
    await add(users, "bob", T0 + 1800, rcpts=50)
    assert await users.usage("alice", T0 + 1800, PERIODS) == (
        WindowCount(3600, 2, 5), WindowCount(86400, 2, 5))
    # the first event leaves the hour (ts > now - period: exactly one hour old is out)
    assert await users.usage("alice", T0 + 3600, PERIODS) == (
        WindowCount(3600, 1, 2), WindowCount(86400, 2, 5))
    assert await users.usage("alice", T0 + 86400 + 1800, PERIODS) == (
        WindowCount(3600, 0, 0), WindowCount(86400, 0, 0))
    assert await users.usage("nobody", T0, PERIODS) == (
        WindowCount(3600, 0, 0), WindowCount(86400, 0, 0))


async def test_recording_prunes_the_users_events_out_of_every_window(
        users: UserStore, users_url: str) -> None:
    await add(users, "alice", T0)
    await add(users, "bob", T0)
    await add(users, "alice", T0 + 86400)  # alice's first event is now out of the day
    engine = create_engine(users_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(
                select(UserEvent.user, func.count()).group_by(UserEvent.user)
                .order_by(UserEvent.user))).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in rows] == [("alice", 1), ("bob", 1)]


async def test_suspend_and_unsuspend(users: UserStore) -> None:
    assert not (await users.status("alice")).suspended
    assert not await users.unsuspend("alice")  # not suspended: nothing to lift
    await users.suspend("alice", "hijacked", T0)
    st = await users.status("alice")
    assert (st.suspended, st.suspended_ts, st.reason) == (True, T0, "hijacked")
    await users.suspend("alice", "again", T0 + 5)  # idempotent, keeps one row
    assert await users.unsuspend("alice")
    st = await users.status("alice")
    assert (st.suspended, st.reason) == (False, "")
    assert not await users.unsuspend("alice")


async def test_alert_claimed_once_per_incident(users: UserStore) -> None:
    # many sessions cross the limit at the same moment: exactly one sends the alert
    claims = await asyncio.gather(*(users.claim_alert("alice", T0, T0 - 86400)
                                    for _ in range(8)))
    assert claims.count(True) == 1
    assert not await users.claim_alert("alice", T0 + 3600, T0 + 3600 - 86400)
    st = await users.status("alice")
    assert (st.last_alert_ts, st.alerts) == (T0, 1)
    # a day later the incident is over: a new one may alert
    assert await users.claim_alert("alice", T0 + 86400, T0)
    # an alert that could not be sent is released, so the next crossing retries
    await users.release_alert("alice")
    st = await users.status("alice")
    assert (st.last_alert_ts, st.alerts) == (None, 1)
    assert await users.claim_alert("alice", T0 + 86401, T0 + 1)


async def test_unsuspend_keeps_the_incident_open(users: UserStore) -> None:
    assert await users.claim_alert("alice", T0, T0 - 86400)
    await users.suspend("alice", "automatic", T0)
    assert await users.unsuspend("alice")
    # still the same incident: no second alert (nor automatic suspension) right away
    assert not await users.claim_alert("alice", T0 + 60, T0 + 60 - 86400)
    assert await users.claim_alert("alice", T0 + 86400, T0)


async def test_activity_and_detail(users: UserStore) -> None:
    await add(users, "alice", T0, rcpts=2, domains=("a.test", "b.test"), subject="one")
    await add(users, "alice", T0 + 10, rcpts=1, domains=("b.test",), subject="two")
    await add(users, "alice", T0 + 20, rcpts=1, domains=("c.test",), subject="")
    await add(users, "bob", T0 - 7200)
    await users.suspend("carol", "by hand", T0)
    rows = await users.activity(T0 + 30, PERIODS)
    assert [(r.status.user, r.counts, r.status.suspended) for r in rows] == [
        ("alice", (WindowCount(3600, 3, 4), WindowCount(86400, 3, 4)), False),
        ("bob", (WindowCount(3600, 0, 0), WindowCount(86400, 1, 1)), False),
        ("carol", (WindowCount(3600, 0, 0), WindowCount(86400, 0, 0)), True),
    ]
    detail = await users.detail("alice", T0 + 30, PERIODS)
    assert detail is not None
    assert detail.top_domains == (("b.test", 2), ("a.test", 1), ("c.test", 1))
    assert detail.subjects == ((T0 + 10, "two"), (T0, "one"))
    assert await users.detail("nobody", T0, PERIODS) is None
    carol = await users.detail("carol", T0, PERIODS)
    assert carol is not None and carol.status.suspended


async def test_panic_switch(users: UserStore) -> None:
    assert not await users.panic()
    assert await users.get_setting("panic") is None
    await users.set_setting("panic", "on", T0)
    assert await users.panic()
    await users.set_setting("panic", "off", T0 + 1)
    assert not await users.panic()
    assert await users.get_setting("panic") == "off"
