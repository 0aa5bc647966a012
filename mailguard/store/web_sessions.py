"""Web sessions and login throttling (tables `web_session`, `web_login_attempt`), shared
by every `mailguard web` process on the store.

Login attempts are counted before the password is checked: an attempt is a row from the
moment it starts, so twenty parallel guesses cannot all slip under the limit. The insert
and the count run in one write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: a
transaction-scoped advisory lock per key), so two web hosts count each other too."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.models import WebLoginAttempt, WebSession

TOUCH_INTERVAL_S = 60.0  # last_seen is rewritten at most this often (idle expiry)


@dataclass(frozen=True, slots=True)
class WebSessionRecord:
    user: str
    csrf: str
    created_ts: float
    last_seen_ts: float


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class WebSessionStore:
    """Repository of web sessions and login attempts."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, user: str, now: float) -> tuple[str, WebSessionRecord]:
        """A new session for `user`: (the cookie's token, the session)."""
        token = secrets.token_urlsafe(32)
        rec = WebSessionRecord(user, secrets.token_urlsafe(32), now, now)
        with translate_errors("creating web session", self._db.url):
            async with self._db.transaction() as conn:
                await conn.execute(insert(WebSession).values(
                    token_hash=_hash(token), user=user, csrf=rec.csrf, created_ts=now,
                    last_seen_ts=now))
        return token, rec

    async def get(self, token: str, now: float, *, idle_s: float,
                  max_s: float) -> WebSessionRecord | None:
        """The live session of `token`, or None (unknown, idle too long, too old:
        an expired one is deleted)."""
        key = _hash(token)
        with translate_errors("reading web session", self._db.url):
            async with self._db.engine.connect() as conn:
                row = (await conn.execute(
                    select(WebSession.user, WebSession.csrf, WebSession.created_ts,
                           WebSession.last_seen_ts).where(WebSession.token_hash == key)
                )).first()
            if row is None:
                return None
            rec = WebSessionRecord(row[0], row[1], row[2], row[3])
            if now - rec.last_seen_ts > idle_s or now - rec.created_ts > max_s:
                await self.delete(token)
                return None
            if now - rec.last_seen_ts >= TOUCH_INTERVAL_S:
                async with self._db.transaction() as wconn:
                    await wconn.execute(update(WebSession).where(WebSession.token_hash == key)
                                        .values(last_seen_ts=now))
        return rec

    async def delete(self, token: str) -> None:
        with translate_errors("deleting web session", self._db.url):
            async with self._db.transaction() as conn:
                await conn.execute(delete(WebSession).where(WebSession.token_hash == _hash(token)))

    async def begin_login(self, limits: Mapping[str, int], now: float,
                          window_s: float) -> list[int] | None:
        """Count one attempt for each key ({"ip:…": limit, "user:…": limit}); None when a
        key already has `limit` attempts in the window (nothing is counted then, so a
        locked-out address cannot be kept locked out forever by more guesses).
        Otherwise the ids of the new rows, for `end_login`."""
        keys = sorted(limits)
        with translate_errors("counting login attempts", self._db.url):
            async with self._db.transaction() as conn:
                await _lock(conn, keys)
                counts = dict((await conn.execute(
                    select(WebLoginAttempt.key, func.count())
                    .where(WebLoginAttempt.key.in_(keys), WebLoginAttempt.ts > now - window_s)
                    .group_by(WebLoginAttempt.key))).all())
                if any(counts.get(k, 0) >= limits[k] for k in keys):
                    return None
                ids = []
                for k in keys:
                    res = await conn.execute(insert(WebLoginAttempt).values(key=k, ts=now)
                                             .returning(WebLoginAttempt.id))
                    ids.append(int(res.scalar_one()))
        return ids

    async def end_login(self, ids: Sequence[int], *, success: bool, account_key: str = "",
                        now: float = 0.0) -> None:
        """A failed attempt stays counted for the window; a successful one is forgotten,
        and so are the account's earlier failures."""
        if not success:
            return
        with translate_errors("counting login attempts", self._db.url):
            async with self._db.transaction() as conn:
                await conn.execute(delete(WebLoginAttempt).where(WebLoginAttempt.id.in_(ids)))
                if account_key:
                    await conn.execute(delete(WebLoginAttempt).where(
                        WebLoginAttempt.key == account_key, WebLoginAttempt.ts <= now))

    async def purge(self, now: float, *, max_s: float, window_s: float) -> tuple[int, int]:
        """Forget sessions older than `max_s` and attempts older than the window."""
        with translate_errors("purging web sessions", self._db.url):
            async with self._db.transaction() as conn:
                s = await conn.execute(delete(WebSession).where(
                    WebSession.created_ts < now - max_s))
                a = await conn.execute(delete(WebLoginAttempt).where(
                    WebLoginAttempt.ts < now - window_s))
        return s.rowcount, a.rowcount


async def _lock(conn: AsyncConnection, keys: Sequence[str]) -> None:
    """PostgreSQL: serialise attempts on the same keys across hosts (SQLite's
    BEGIN IMMEDIATE already serialises every writer)."""
    if conn.dialect.name != "postgresql":
        return
    for k in keys:  # sorted by the caller: no deadlock between two logins
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": k})
