"""Mail-flow statistics on SQLite and the real PostgreSQL: every transaction the message
log records is counted once per resolution, in the right bucket (boundaries included),
split by direction, outcome and reason, per domain and per host; usage tables rank
senders, recipients and domains; retention drops each resolution on its own."""

from __future__ import annotations

from mailguard.store.message_log import MessageLogStore
from mailguard.store.records import MessageRecord
from mailguard.store.repo import Store
from mailguard.store.stats import DAY, FIVE_MIN, HOUR, Retention, StatsStore, classify

T0 = 1_799_971_200.0  # a multiple of 86400: midnight UTC, a bucket boundary of each size


def rec(ts: float, outcome: str, *, rcpts: tuple[str, ...] = ("joe@example.com",),
        sender: str = "a@example.org", size: int = 1000, code: int = 250,
        verdicts: str = "dnsbl=pass", direction: str = "in", dispositions: str = "",
        host: str = "mx1") -> MessageRecord:
    return MessageRecord(ts, "s", "192.0.2.1", "h", sender, rcpts, size, outcome, code, "",
                         5, verdicts, direction, dispositions, host)


def test_classify() -> None:
    assert [(f.outcome, f.reason, f.rcpts) for f in classify(rec(
        T0, "accepted", rcpts=("a@x", "b@x", "c@x"),
        dispositions="delivered=1,quarantined=1,deleted=1"))] == [
        ("delivered", "", 1), ("quarantined", "spam", 1), ("deleted", "spam", 1)]
    # all recipients greylisted, the client left: deferred by greylist
    assert classify(rec(T0, "aborted", rcpts=(), code=0,
                        verdicts="dnsbl=pass greylist=fail",
                        dispositions="refused4=2")) == [
        classify(rec(T0, "tempfail", code=451, verdicts="greylist=fail"))[0].__class__(
            "deferred", "greylist", 2)]
    assert classify(rec(T0, "rejected", code=554, verdicts="clamd=fail"))[0].reason == "virus"
    assert classify(rec(T0, "rejected", code=552, verdicts=""))[0].reason == "size"
    assert classify(rec(T0, "aborted", code=0, verdicts="", dispositions=""))[0].outcome \
        == "aborted"


async def test_counts_buckets_domains_hosts_usage_and_retention(store: Store) -> None:
    log = MessageLogStore(store.db)
    await log.record([
        rec(T0, "accepted", dispositions="delivered=1"),
        rec(T0 + FIVE_MIN - 1, "accepted", rcpts=("joe@example.com", "ann@other.test"),
            size=500, dispositions="delivered=1,quarantined=1"),
        rec(T0 + FIVE_MIN, "rejected", code=554, verdicts="dnsbl=fail"),  # next bucket
        rec(T0 + 10, "accepted", sender="joe@example.com", rcpts=("x@far.example",),
            direction="out", size=200, dispositions="delivered=1", host="mx2"),
    ])
    await log.record([rec(T0 + HOUR, "tempfail", code=451, verdicts="greylist=fail")])
    stats = StatsStore(store.db)
    five = await stats.flow(FIVE_MIN, T0, T0 + DAY)
    by = {(p.start_ts, p.direction, p.outcome, p.reason): (p.messages, p.rcpts, p.bytes)
          for p in five}
    assert by == {
        (T0, "in", "delivered", ""): (2, 2, 1500),
        (T0, "in", "quarantined", "spam"): (1, 1, 500),
        (T0, "out", "delivered", ""): (1, 1, 200),
        (T0 + FIVE_MIN, "in", "rejected", "dnsbl"): (1, 1, 0),
        (T0 + HOUR, "in", "deferred", "greylist"): (1, 1, 0),
    }
    hourly = await stats.flow(HOUR, T0, T0 + DAY)
    assert sum(p.messages for p in hourly if p.start_ts == T0) == 5  # 4 parts, one hour
    daily = await stats.flow(DAY, T0, T0 + DAY)
    assert sum(p.messages for p in daily) == 6
    # one host, one domain
    assert sum(p.messages for p in await stats.flow(DAY, T0, T0 + DAY, host="mx2")) == 1
    other = await stats.flow(DAY, T0, T0 + DAY, domain="other.test")
    assert [(p.outcome, p.rcpts) for p in other] == [("delivered", 1), ("quarantined", 1)]
    sent = await stats.flow(DAY, T0, T0 + DAY, domain="example.com")
    assert ("out", "delivered", 1) in [(p.direction, p.outcome, p.messages) for p in sent]
    assert await stats.hosts() == ["mx1", "mx2"]
    # usage: accepted messages and bytes; what was caught for them
    top = await stats.usage("rcpt", DAY, T0, T0 + DAY)
    assert [(u.key, u.messages, u.bytes, u.caught) for u in top][:2] == [
        ("joe@example.com", 2, 1500, 3), ("ann@other.test", 1, 500, 1)]
    senders = await stats.usage("sender", DAY, T0, T0 + DAY, order="bytes")
    assert senders[0].key == "a@example.org" and senders[0].bytes == 1500
    assert [u.key for u in await stats.usage("domain", HOUR, T0, T0 + HOUR)] == [
        "example.com", "far.example", "other.test"]
    series = await stats.usage_series("rcpt", "joe@example.com", HOUR, T0, T0 + DAY)
    assert [s[0] for s in series] == [T0, T0 + HOUR]
    # retention: five-minute buckets go after 2 days, the daily ones stay
    removed = await stats.purge(T0 + 3 * DAY, Retention())
    assert removed > 0
    assert await stats.flow(FIVE_MIN, T0, T0 + DAY) == []
    assert sum(p.messages for p in await stats.flow(DAY, T0, T0 + DAY)) == 6


async def test_housekeeping_purges_log_and_buckets_by_retention(store: Store) -> None:
    from mailguard.housekeeping import purge_once  # noqa: PLC0415
    from mailguard.settings.stats import StatsConfig  # noqa: PLC0415

    log = MessageLogStore(store.db)
    await log.record([rec(T0, "accepted", dispositions="delivered=1"),
                      rec(T0 + 5 * DAY, "accepted", dispositions="delivered=1")])
    cfg = StatsConfig(message_log_days=3, five_min_days=1, hourly_days=4, daily_days=30)
    rows, buckets = await purge_once(cfg, store.db, T0 + 6 * DAY + HOUR)
    assert rows == 1  # the first transaction's row; the second is within 3 days
    assert [r.ts for r in await log.recent()] == [T0 + 5 * DAY]
    stats = StatsStore(store.db)
    assert buckets > 0
    assert await stats.flow(FIVE_MIN, T0, T0 + 7 * DAY) == []
    assert [p.start_ts for p in await stats.flow(HOUR, T0, T0 + 7 * DAY)] == [T0 + 5 * DAY]
    assert len(await stats.flow(DAY, T0, T0 + 7 * DAY)) == 2
