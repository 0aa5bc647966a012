"""Mail-flow statistics: counters per time bucket (tables `flow_bucket`, `usage_bucket`).

Counted when a transaction's message_log row is written, in the same database
transaction (MessageLogStore.record calls `count`), so a transaction is counted exactly
once and nothing on the SMTP path waits for it: the record writer batches rows, and a
batch becomes one multi-row upsert per table (`INSERT … ON CONFLICT DO UPDATE SET
messages = messages + excluded.messages`, on SQLite and PostgreSQL alike). Every
resolution is written at once (5 minutes, hour, day), so there is no roll-up job that
could fall behind: each resolution just has its own retention (`purge`). Several MX
hosts on one PostgreSQL write their own `host` rows; the pages show the sum or one host.

What a transaction counts as (`classify`), from its record:
- accepted: per recipient "delivered", "quarantined" or "deleted" (its own row each; a
  message with two kinds of recipients counts once under each);
- refused at DATA: "rejected" (5xx) or "deferred" (4xx); a transaction the client left
  after its recipients were refused: "rejected"/"deferred" by the refusals' class, else
  "aborted";
- the reason: the failed check ("dnsbl", "greylist", "relay", "spf", "virus", "spam",
  "limits", "policy" …), else from the reply code ("size", "syntax", "error").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.models import FlowBucket, UsageBucket
from mailguard.store.records import MessageRecord

FIVE_MIN, HOUR, DAY = 300, 3600, 86400
FLOW_RESOLUTIONS = (FIVE_MIN, HOUR, DAY)
USAGE_RESOLUTIONS = (HOUR, DAY)
OUTCOMES = ("delivered", "quarantined", "deleted", "rejected", "deferred", "aborted")
CHECK_REASONS = {"dnsbl": "dnsbl", "greylist": "greylist", "relay": "relay", "spf": "spf",
                 "clamd": "virus", "spamd": "spam", "limits": "limits", "tarpit": "limits",
                 "badmailfrom": "policy"}


@dataclass(frozen=True, slots=True)
class Flow:
    """One counted part of a transaction."""

    outcome: str
    reason: str
    rcpts: int


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each resolution is kept (days)."""

    five_min_days: float = 2
    hourly_days: float = 62
    daily_days: float = 730

    def seconds(self, resolution: int) -> float:
        days = {FIVE_MIN: self.five_min_days, HOUR: self.hourly_days,
                DAY: self.daily_days}[resolution]
        return days * 86400


def _counts(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key and value.isdigit():
            out[key] = int(value)
    return out


def failed_check(verdicts: str) -> str:
    """The reason of the first check that failed or erred in a compact verdicts text
    ("dnsbl=pass greylist=fail" → "greylist"); "" when none did."""
    for part in verdicts.split():
        name, _, result = part.partition("=")
        if result.startswith(("fail", "error")):
            return CHECK_REASONS.get(name, name)
    return ""


def _code_reason(code: int) -> str:
    if code in (552, 523):
        return "size"
    if code in (500, 501, 502, 503, 504, 553, 555):
        return "syntax"
    if code in (421, 451, 452):
        return "error"
    return "other"


def classify(rec: MessageRecord) -> list[Flow]:
    counts = _counts(rec.dispositions)
    if rec.outcome == "accepted":
        flows = [Flow(what, "spam" if what != "delivered" else "", n)
                 for what in ("delivered", "quarantined", "deleted")
                 if (n := counts.get(what, 0))]
        return flows or [Flow("delivered", "", len(rec.rcpts))]
    reason = failed_check(rec.verdicts)
    if rec.outcome == "aborted":
        if counts.get("refused5"):
            return [Flow("rejected", reason or "other", counts["refused5"])]
        if counts.get("refused4"):
            return [Flow("deferred", reason or "other", counts["refused4"])]
        return [Flow("aborted", "", len(rec.rcpts))]
    outcome = "rejected" if rec.reply_code >= 500 else "deferred"
    return [Flow(outcome, reason or _code_reason(rec.reply_code), len(rec.rcpts))]


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _upsert(conn: Connection, table: Any, rows: list[dict[str, Any]],
            keys: Sequence[str], sums: Sequence[str]) -> None:
    if not rows:
        return
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    stmt = dialect.insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: getattr(table, c) + getattr(stmt.excluded, c) for c in sums})
    conn.execute(stmt, rows)


def count(conn: Connection, recs: Iterable[MessageRecord]) -> None:
    """Add `recs` to every resolution's buckets (synchronous: runs inside the message
    log's batched write)."""
    flow: dict[tuple[Any, ...], list[int]] = {}
    usage: dict[tuple[Any, ...], list[int]] = {}
    for rec in recs:
        rcpt_domains = sorted({_domain(r) for r in rec.rcpts})
        # a domain's view: mail it received, or mail its users (or machines) sent
        outgoing = rec.direction in ("out", "relay") and bool(rec.mail_from)
        own_domains = [_domain(rec.mail_from)] if outgoing else rcpt_domains
        accepted = rec.outcome == "accepted"
        for f in classify(rec):
            for res in FLOW_RESOLUTIONS:
                start = rec.ts - rec.ts % res
                for domain in ("", *own_domains):
                    key = (res, start, rec.host, domain, rec.direction, f.outcome, f.reason)
                    acc = flow.setdefault(key, [0, 0, 0])
                    acc[0] += 1
                    acc[1] += f.rcpts
                    acc[2] += rec.size if f.outcome in ("delivered", "quarantined",
                                                        "deleted") else 0
        caught = 0 if accepted and _counts(rec.dispositions).get("delivered", 0) == len(
            rec.rcpts) else 1
        keys = [("rcpt", r.lower()) for r in rec.rcpts]
        keys += [("domain", d) for d in rcpt_domains]
        if rec.mail_from:
            keys.append(("sender", rec.mail_from.lower()))
        for res in USAGE_RESOLUTIONS:
            start = rec.ts - rec.ts % res
            for kind, value in keys:
                acc = usage.setdefault((res, start, rec.host, kind, value), [0, 0, 0])
                acc[0] += 1 if accepted else 0
                acc[1] += rec.size if accepted else 0
                acc[2] += caught
    flow_keys = ("resolution", "start_ts", "host", "domain", "direction", "outcome", "reason")
    _upsert(conn, FlowBucket,
            [{**dict(zip(flow_keys, k, strict=True)), "messages": v[0], "rcpts": v[1],
              "bytes": v[2]} for k, v in flow.items()],
            flow_keys, ("messages", "rcpts", "bytes"))
    usage_keys = ("resolution", "start_ts", "host", "kind", "key")
    _upsert(conn, UsageBucket,
            [{**dict(zip(usage_keys, k, strict=True)), "messages": v[0], "bytes": v[1],
              "caught": v[2]} for k, v in usage.items()],
            usage_keys, ("messages", "bytes", "caught"))


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowPoint:
    start_ts: float
    direction: str
    outcome: str
    reason: str
    messages: int
    rcpts: int
    bytes: int


@dataclass(frozen=True, slots=True)
class UsageRow:
    key: str
    messages: int
    bytes: int
    caught: int


class StatsStore:
    """Queries and retention of the statistics."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def flow(self, resolution: int, since: float, until: float, *, domain: str = "",
                   host: str = "") -> list[FlowPoint]:
        """Buckets in [since, until), summed over hosts unless `host` is given."""
        t = FlowBucket
        cond = [t.resolution == resolution, t.start_ts >= since, t.start_ts < until,
                t.domain == domain.lower()]
        if host:
            cond.append(t.host == host)
        query = (select(t.start_ts, t.direction, t.outcome, t.reason,
                        func.sum(t.messages), func.sum(t.rcpts), func.sum(t.bytes))
                 .where(*cond).group_by(t.start_ts, t.direction, t.outcome, t.reason)
                 .order_by(t.start_ts))
        with translate_errors("reading statistics", self._db.url):
            async with self._db.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [FlowPoint(float(r[0]), r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6]))
                for r in rows]

    async def usage(self, kind: str, resolution: int, since: float, until: float, *,
                    key: str = "", order: str = "messages", limit: int = 20,
                    host: str = "", domain: str = "") -> list[UsageRow]:
        """Top `kind` ("sender", "rcpt", "domain") by `order` ("messages", "bytes",
        "caught") over [since, until); with `key`, only that one; with `domain`, only
        addresses of that domain."""
        t = UsageBucket
        cond = [t.kind == kind, t.resolution == resolution, t.start_ts >= since,
                t.start_ts < until]
        if key:
            cond.append(t.key == key.lower())
        if domain:
            escaped = domain.lower().replace("\\", "\\\\").replace("%", "\\%").replace(
                "_", "\\_")
            cond.append(t.key.like(f"%@{escaped}", escape="\\"))
        if host:
            cond.append(t.host == host)
        sums = {"messages": func.sum(t.messages), "bytes": func.sum(t.bytes),
                "caught": func.sum(t.caught)}
        query = (select(t.key, sums["messages"], sums["bytes"], sums["caught"])
                 .where(*cond).group_by(t.key)
                 .order_by(sums.get(order, sums["messages"]).desc(), t.key).limit(limit))
        with translate_errors("reading usage", self._db.url):
            async with self._db.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [UsageRow(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def usage_series(self, kind: str, key: str, resolution: int, since: float,
                           until: float) -> list[tuple[float, int, int, int]]:
        """(start, messages, bytes, caught) of one sender / recipient / domain."""
        t = UsageBucket
        query = (select(t.start_ts, func.sum(t.messages), func.sum(t.bytes),
                        func.sum(t.caught))
                 .where(t.kind == kind, t.key == key.lower(), t.resolution == resolution,
                        t.start_ts >= since, t.start_ts < until)
                 .group_by(t.start_ts).order_by(t.start_ts))
        with translate_errors("reading usage", self._db.url):
            async with self._db.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [(float(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def hosts(self) -> list[str]:
        query = select(FlowBucket.host).where(FlowBucket.resolution == DAY).distinct()
        with translate_errors("reading statistics", self._db.url):
            async with self._db.engine.connect() as conn:
                return sorted(r[0] for r in (await conn.execute(query)).all())

    async def purge(self, now: float, retention: Retention) -> int:
        """Drop buckets older than their resolution's retention; returns rows deleted."""
        total = 0
        with translate_errors("purging statistics", self._db.url):
            for table, resolutions in ((FlowBucket, FLOW_RESOLUTIONS),
                                       (UsageBucket, USAGE_RESOLUTIONS)):
                for res in resolutions:
                    async with self._db.transaction() as conn:
                        result = await conn.execute(delete(table).where(
                            table.resolution == res,
                            table.start_ts < now - retention.seconds(res)))
                        total += int(result.rowcount or 0)
        return total
