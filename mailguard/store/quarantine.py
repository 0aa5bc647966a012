"""The quarantine's rows (table `quarantine`); the files are the quarantine service's
(mailguard/quarantine.py). Lists are scoped (one recipient, one domain, or everything),
paged by id, and read through the (rcpt|domain, status, id) indexes: a page costs the
same with 100,000 rows as with 10.

A release is claimed before the message is handed over (`held` → `releasing` in one
conditional UPDATE), so two clicks, two browsers or two web hosts release it once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import CursorResult

from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.models import Quarantine

HELD = "held"
RELEASING = "releasing"
RELEASED = "released"
DELETED = "deleted"
STATUSES = (HELD, RELEASING, RELEASED, DELETED)


@dataclass(frozen=True, slots=True)
class NewEntry:
    """What the QUEUE stage knows when it keeps a copy for one recipient."""

    rcpt: str
    mail_from: str
    from_header: str
    subject: str
    score: float | None
    size: int
    kind: str  # "spam" | "virus"
    reason: str
    path: str


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    ts: float
    expires_ts: float
    rcpt: str
    domain: str
    mail_from: str
    from_header: str
    subject: str
    score: float | None
    size: int
    kind: str
    reason: str
    path: str
    status: str
    status_ts: float | None
    status_by: str
    queue_id: str


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose entries: one recipient, one domain, or (both empty) all of them."""

    rcpt: str = ""
    domain: str = ""

    def conditions(self) -> list[Any]:
        if self.rcpt:
            return [Quarantine.rcpt == self.rcpt.lower()]
        if self.domain:
            return [Quarantine.domain == self.domain.lower()]
        return []


def _entry(row: Any) -> Entry:
    return Entry(row.id, row.ts, row.expires_ts, row.rcpt, row.domain, row.mail_from,
                 row.from_header, row.subject, row.score, row.size, row.kind, row.reason,
                 row.path, row.status, row.status_ts, row.status_by, row.queue_id)


class QuarantineStore:
    """Repository of quarantine rows; takes the process's Database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, entries: Sequence[NewEntry], now: float, expires: float) -> list[int]:
        rows = [{"ts": now, "expires_ts": expires, "rcpt": e.rcpt.lower(),
                 "domain": e.rcpt.rpartition("@")[2].lower(), "mail_from": e.mail_from,
                 "from_header": e.from_header, "subject": e.subject, "score": e.score,
                 "size": e.size, "kind": e.kind, "reason": e.reason, "path": e.path,
                 "status": HELD, "status_ts": None, "status_by": "", "queue_id": ""}
                for e in entries]
        ids: list[int] = []
        with translate_errors("writing quarantine", self._db.url):
            async with self._db.transaction() as conn:
                for row in rows:
                    result = await conn.execute(insert(Quarantine).values(**row)
                                                .returning(Quarantine.id))
                    ids.append(int(result.scalar_one()))
        return ids

    async def get(self, entry_id: int, scope: Scope) -> Entry | None:
        """The entry if it exists and lies in `scope` (else None: not found and not
        yours look the same)."""
        query = select(Quarantine).where(Quarantine.id == entry_id, *scope.conditions())
        with translate_errors("reading quarantine", self._db.url):
            async with self._db.engine.connect() as conn:
                row = (await conn.execute(query)).first()
        return _entry(row) if row is not None else None

    async def page(self, scope: Scope, *, status: str = HELD, before_id: int | None = None,
                   limit: int = 50) -> list[Entry]:
        """Newest first, `limit` rows with ids below `before_id` (the next page)."""
        cond = [*scope.conditions(), Quarantine.status == status]
        if before_id is not None:
            cond.append(Quarantine.id < before_id)
        query = select(Quarantine).where(and_(*cond)).order_by(
            Quarantine.id.desc()).limit(limit)
        with translate_errors("reading quarantine", self._db.url):
            async with self._db.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [_entry(r) for r in rows]

    async def count(self, scope: Scope, status: str = HELD, *, cap: int | None = None) -> int:
        """How many entries; with `cap`, at most cap (a page needs "1000+", not the
        cost of counting 90,000 index entries)."""
        inner = select(Quarantine.id).where(*scope.conditions(), Quarantine.status == status)
        if cap is not None:
            inner = inner.limit(cap)
        query = select(func.count()).select_from(inner.subquery())
        with translate_errors("counting quarantine", self._db.url):
            async with self._db.engine.connect() as conn:
                return int((await conn.execute(query)).scalar_one())

    async def claim(self, entry_id: int, scope: Scope, *, to: str, now: float,
                    by: str, allowed_from: tuple[str, ...] = (HELD,)) -> Entry | None:
        """Move the entry from one of `allowed_from` to status `to` atomically; the
        entry as it was before, or None when it was not there (or not in that state)."""
        with translate_errors("updating quarantine", self._db.url):
            async with self._db.transaction() as conn:
                row = (await conn.execute(select(Quarantine).where(
                    Quarantine.id == entry_id, *scope.conditions()))).first()
                if row is None or row.status not in allowed_from:
                    return None
                result = cast("CursorResult[Any]", await conn.execute(
                    update(Quarantine).where(Quarantine.id == entry_id,
                                             Quarantine.status == row.status)
                    .values(status=to, status_ts=now, status_by=by)))
                if result.rowcount != 1:
                    return None
        return _entry(row)

    async def finish(self, entry_id: int, *, status: str, now: float, by: str,
                     queue_id: str = "") -> None:
        with translate_errors("updating quarantine", self._db.url):
            async with self._db.transaction() as conn:
                await conn.execute(update(Quarantine).where(Quarantine.id == entry_id)
                                   .values(status=status, status_ts=now, status_by=by,
                                           queue_id=queue_id))

    async def expired(self, now: float, *, keep_done_s: float,
                      limit: int = 1000) -> list[Entry]:
        """Held entries past their expiry, and rows released/deleted more than
        `keep_done_s` ago: what a purge removes, oldest first, at most `limit`."""
        query = select(Quarantine).where(
            ((Quarantine.status == HELD) & (Quarantine.expires_ts < now))
            | (Quarantine.status.in_((RELEASED, DELETED))
               & (Quarantine.status_ts < now - keep_done_s))
        ).order_by(Quarantine.id).limit(limit)
        with translate_errors("reading quarantine", self._db.url):
            async with self._db.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [_entry(r) for r in rows]

    async def remove(self, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        with translate_errors("purging quarantine", self._db.url):
            async with self._db.transaction() as conn:
                result = cast("CursorResult[Any]", await conn.execute(
                    delete(Quarantine).where(Quarantine.id.in_(list(ids)))))
        return result.rowcount
