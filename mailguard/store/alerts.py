"""Incidents for the admin (table `alert`): one row per incident of a key such as
`scanner:clamd` or `qmail-queue:mx1.example.com`, opened once, touched by every later
sighting, resolved when the condition clears.

`touch` answers whether a mail is due and claims it in the same transaction, so of two
processes or MX hosts that see the same incident at once exactly one sends it: the first
mail of an incident, then one reminder each time `remind_s` has passed. A claim whose mail
could not be sent is given back (`unclaim`), so the next sighting tries again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection

from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.models import Alert

MESSAGE_MAX = 2000  # characters of an incident's latest message kept


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One incident as stored."""

    id: int
    key: str
    kind: str
    host: str
    message: str  # the latest sighting's description
    first_ts: float
    last_ts: float
    last_sent_ts: float | None  # the last mail (or claimed action) for it
    sent: int  # mails sent (first + reminders)
    resolved_ts: float | None

    @property
    def open(self) -> bool:
        return self.resolved_ts is None


@dataclass(frozen=True, slots=True)
class Touched:
    """What `touch` found: the incident and whether this caller is to send its mail
    (`due`, already claimed: `last_sent_ts` is now). `new`: the incident began now;
    `previous_sent_ts`: what `unclaim` restores."""

    alert: AlertRecord
    due: bool
    new: bool
    previous_sent_ts: float | None


def _record(row: Any) -> AlertRecord:
    return AlertRecord(row.id, row.key, row.kind, row.host, row.message, row.first_ts,
                       row.last_ts, row.last_sent_ts, row.sent, row.resolved_ts)


_COLUMNS = (Alert.id, Alert.key, Alert.kind, Alert.host, Alert.message, Alert.first_ts,
            Alert.last_ts, Alert.last_sent_ts, Alert.sent, Alert.resolved_ts)


class AlertStore:
    """Repository of `alert` rows on the store's database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._url = db.url

    async def touch(self, key: str, kind: str, message: str, *, host: str, now: float,
                    remind_s: float, across_incidents: bool = False) -> Touched:
        """Open the incident `key` (or note a further sighting of the open one) and
        claim its mail when one is due: none sent yet, or the last one `remind_s` ago.
        `across_incidents`: the last mail of an earlier, resolved incident of the key
        counts too (a cool-down that a brief recovery does not reset)."""
        message = message[:MESSAGE_MAX]
        with translate_errors("recording alert", self._url):
            async with self._db.transaction() as conn:
                await self._lock_key(conn, key)
                row = (await conn.execute(
                    select(*_COLUMNS).where(Alert.key == key, Alert.resolved_ts.is_(None))
                    .order_by(Alert.id.desc()).limit(1)
                )).first()
                new = row is None
                if row is None:
                    alert_id = (await conn.execute(
                        insert(Alert).values(
                            key=key, kind=kind, host=host, message=message, first_ts=now,
                            last_ts=now, last_sent_ts=None, sent=0, resolved_ts=None)
                        .returning(Alert.id))).scalar_one()
                    previous: float | None = None
                else:
                    alert_id, previous = int(row.id), row.last_sent_ts
                    await conn.execute(update(Alert).where(Alert.id == alert_id)
                                       .values(last_ts=now, message=message, host=host))
                last_sent = previous
                if across_incidents:
                    last_sent = (await conn.execute(
                        select(func.max(Alert.last_sent_ts)).where(Alert.key == key)
                    )).scalar_one_or_none()
                due = False
                if last_sent is None or last_sent <= now - remind_s:
                    # the claim: a conditional update, so a racing claimer finds it taken
                    claimed = cast("CursorResult[Any]", await conn.execute(
                        update(Alert)
                        .where(Alert.id == alert_id,
                               or_(Alert.last_sent_ts.is_(None),
                                   Alert.last_sent_ts <= now - remind_s))
                        .values(last_sent_ts=now, sent=Alert.sent + 1)))
                    due = claimed.rowcount > 0
                stored = (await conn.execute(
                    select(*_COLUMNS).where(Alert.id == alert_id))).one()
        return Touched(_record(stored), due, new, previous)

    async def unclaim(self, touched: Touched) -> None:
        """Give back the claim of `touched` (its mail could not be sent)."""
        if not touched.due:
            return
        with translate_errors("releasing alert", self._url):
            async with self._db.transaction() as conn:
                await conn.execute(
                    update(Alert)
                    .where(Alert.id == touched.alert.id, Alert.sent > 0,
                           Alert.last_sent_ts == touched.alert.last_sent_ts)
                    .values(last_sent_ts=touched.previous_sent_ts, sent=Alert.sent - 1))

    async def resolve(self, key: str, *, now: float) -> list[AlertRecord]:
        """Close the open incident of `key`; what was closed (empty: none was open)."""
        with translate_errors("resolving alert", self._url):
            async with self._db.transaction() as conn:
                rows = (await conn.execute(
                    select(*_COLUMNS).where(Alert.key == key, Alert.resolved_ts.is_(None))
                )).all()
                if rows:
                    await conn.execute(
                        update(Alert).where(Alert.id.in_([r.id for r in rows]))
                        .values(resolved_ts=now))
        return [replace(_record(r), resolved_ts=now) for r in rows]

    async def get_open(self, key: str) -> AlertRecord | None:
        """The open incident of `key`, if any."""
        rows = await self._select(Alert.key == key, Alert.resolved_ts.is_(None))
        return rows[0] if rows else None

    async def list_open(self) -> list[AlertRecord]:
        """Open incidents, newest sighting first."""
        return await self._select(Alert.resolved_ts.is_(None))

    async def list_recent(self, since: float, limit: int = 100) -> list[AlertRecord]:
        """Incidents seen since `since` (open or resolved), newest sighting first."""
        return await self._select(Alert.last_ts >= since, limit=limit)

    async def _select(self, *where: Any, limit: int = 1000) -> list[AlertRecord]:
        with translate_errors("reading alerts", self._url):
            async with self._db.engine.connect() as conn:
                rows = (await conn.execute(
                    select(*_COLUMNS).where(*where)
                    .order_by(Alert.last_ts.desc(), Alert.id.desc()).limit(limit)
                )).all()
        return [_record(r) for r in rows]

    async def _lock_key(self, conn: AsyncConnection, key: str) -> None:
        """Serialise `touch` per key. SQLite: the write transaction already holds the
        file (BEGIN IMMEDIATE). PostgreSQL: an advisory lock for the transaction, so two
        hosts cannot both open an incident (there is no unique index on open keys)."""
        if not self._db.is_sqlite:
            await conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))
