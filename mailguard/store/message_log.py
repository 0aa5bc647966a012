"""The message log (`message_log`): one row per SMTP or QMAILQUEUE transaction, written
off the SMTP path by the daemon's record writer; `mailguard log` reads and purges it."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.ext.asyncio import async_sessionmaker

from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.models import MessageLog
from mailguard.store.records import MessageRecord
from mailguard.store.stats import count as count_stats

PURGE_BATCH = 10_000  # rows per DELETE: keeps SQLite's write lock short for live writers


def join_rcpts(rcpts: tuple[str, ...]) -> str:
    r"""Recipients as one comma-separated text, readable in SQL for ordinary addresses.

    A quoted local part may hold "," or "\" (RFC 5321 4.1.2): those two are
    backslash-escaped so `split_rcpts` gives back exactly what was stored.
    """
    return ",".join(r.replace("\\", "\\\\").replace(",", "\\,") for r in rcpts)


def split_rcpts(joined: str) -> tuple[str, ...]:
    """Inverse of `join_rcpts`."""
    if not joined:
        return ()
    out: list[str] = []
    current: list[str] = []
    chars = iter(joined)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == ",":
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return tuple(out)


def _to_record(row: MessageLog) -> MessageRecord:
    return MessageRecord(
        ts=row.ts,
        session_id=row.session_id,
        client_ip=row.client_ip,
        helo=row.helo,
        mail_from=row.mail_from,
        rcpts=split_rcpts(row.rcpts),
        size=row.size,
        outcome=row.outcome,
        reply_code=row.reply_code,
        queue_id=row.queue_id,
        duration_ms=row.duration_ms,
        verdicts=row.verdicts,
        direction=row.direction,
        dispositions=row.dispositions,
        host=row.host,
    )


class MessageLogStore:
    """Repository of `message_log` rows."""

    def __init__(self, db: Database, host: str = "") -> None:
        self._db = db
        self._host = host or socket.gethostname()
        self._sessions = async_sessionmaker(db.engine, expire_on_commit=False)

    async def record(self, recs: Sequence[MessageRecord]) -> None:
        """Append transactions to the message log in one database transaction (the
        daemon's record writer batches what queued up while the last write ran), shared
        with the other hot-path writes of the process (Database.batched)."""
        rows = [
            {
                "ts": rec.ts,
                "session_id": rec.session_id,
                "client_ip": rec.client_ip,
                "helo": rec.helo,
                "mail_from": rec.mail_from,
                "rcpts": join_rcpts(rec.rcpts),
                "rcpt_count": len(rec.rcpts),
                "size": rec.size,
                "outcome": rec.outcome,
                "reply_code": rec.reply_code,
                "queue_id": rec.queue_id,
                "duration_ms": rec.duration_ms,
                "verdicts": rec.verdicts,
                "host": rec.host or self._host,
                "direction": rec.direction,
                "dispositions": rec.dispositions,
            }
            for rec in recs
        ]
        if not rows:
            return
        counted = [dataclasses.replace(r, host=r.host or self._host) for r in recs]

        def write(conn: Connection) -> None:
            conn.execute(insert(MessageLog), rows)
            count_stats(conn, counted)  # the same transaction: counted exactly once

        with translate_errors("recording message", self._db.url):
            await self._db.batched(write)

    async def recent(self, limit: int = 50) -> list[MessageRecord]:
        """The newest `limit` transactions, newest first."""
        query = select(MessageLog).order_by(MessageLog.ts.desc(), MessageLog.id.desc())
        with translate_errors("reading message log", self._db.url):
            async with self._sessions() as session:
                rows = (await session.scalars(query.limit(limit))).all()
        return [_to_record(row) for row in rows]

    async def counts(self, since_ts: float) -> dict[str, int]:
        """Transactions per outcome with ts >= since_ts (outcomes with none are absent)."""
        query = (
            select(MessageLog.outcome, func.count())
            .where(MessageLog.ts >= since_ts)
            .group_by(MessageLog.outcome)
        )
        with translate_errors("counting messages", self._db.url):
            async with self._sessions() as session:
                result = await session.execute(query)
                return {outcome: int(count) for outcome, count in result}

    async def purge(self, before_ts: float) -> int:
        """Delete transactions with ts < before_ts; returns how many were deleted.

        Batched, each batch its own transaction, so live writers are not held up.
        """
        total = 0
        with translate_errors("purging message log", self._db.url):
            while True:
                batch = select(MessageLog.id).where(MessageLog.ts < before_ts).limit(PURGE_BATCH)
                query = (
                    delete(MessageLog)
                    .where(MessageLog.id.in_(batch))
                    .execution_options(synchronize_session=False)  # no ORM objects to sync
                )
                async with self._db.session() as session:
                    result = cast("CursorResult[Any]", await session.execute(query))
                total += result.rowcount
                if result.rowcount < PURGE_BATCH:
                    return total
