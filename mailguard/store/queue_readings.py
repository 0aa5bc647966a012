"""Readings of qmail's queue by `mailguard qmail-watch` (table `qmail_queue_reading`),
kept `[qmail_watch] keep_readings_h` (24 h) for the graphs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import CursorResult

from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.models import QmailQueueReading


@dataclass(frozen=True, slots=True)
class QueueReadingRecord:
    host: str
    ts: float
    messages: int
    unprocessed: int
    local: int
    remote: int
    oldest_age_s: float


class QueueReadingStore:
    """Repository of `qmail_queue_reading` rows on the store's database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._url = db.url

    async def add(self, r: QueueReadingRecord, *, purge_before: float | None = None) -> int:
        """Store one reading; with `purge_before`, drop the readings older than that in
        the same transaction. Returns how many were purged."""
        with translate_errors("storing a qmail queue reading", self._url):
            async with self._db.transaction() as conn:
                await conn.execute(insert(QmailQueueReading).values(
                    host=r.host, ts=r.ts, messages=r.messages, unprocessed=r.unprocessed,
                    local=r.local, remote=r.remote, oldest_age_s=r.oldest_age_s))
                if purge_before is None:
                    return 0
                result = cast("CursorResult[Any]", await conn.execute(
                    delete(QmailQueueReading).where(QmailQueueReading.ts < purge_before)))
                return result.rowcount

    async def since(self, ts: float, host: str | None = None) -> list[QueueReadingRecord]:
        """Readings from `ts` on (one host's, or every host's), oldest first."""
        q = select(QmailQueueReading).where(QmailQueueReading.ts >= ts)
        if host is not None:
            q = q.where(QmailQueueReading.host == host)
        with translate_errors("reading qmail queue readings", self._url):
            async with self._db.engine.connect() as conn:
                rows = (await conn.execute(
                    q.order_by(QmailQueueReading.ts, QmailQueueReading.id))).all()
        return [QueueReadingRecord(r.host, r.ts, r.messages, r.unprocessed, r.local, r.remote,
                                   r.oldest_age_s) for r in rows]
