"""SMTP AUTH attempts per client IP (table `auth_attempt`), shared by every worker process
and every MX host on the database: the lockout holds for all of them together.

An attempt is reserved before its password is verified, with one atomic statement
(`INSERT ... ON CONFLICT DO UPDATE SET n = n + 1 WHERE n < cap RETURNING n`, SQLite 3.35+
and PostgreSQL): a statement that finds the limit reached changes nothing and returns no
row. There is no read-then-write, so parallel sessions in any number of processes cannot
all pass a check before the first of them is counted. A login that succeeds (or could not
be verified) gives its reservation back; a failed one keeps it. So `n` is the failures of
the window plus the attempts being verified now.

Windows are fixed (`window_no = epoch // window_s`); a reservation also counts the
previous window's attempts (`cap = limit - previous`), so any `window_s` seconds hold at
most `limit` attempts. The previous window no longer grows (reservations are made in the
current one; a late release only lowers it), so reading it outside the upsert is safe.
Hosts' clocks must agree (NTP): the window comes from each host's wall clock."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult

from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.models import AuthAttempt

_A = cast(Table, AuthAttempt.__table__)


def window_no(now: float, window_s: float) -> int:
    """The fixed window holding `now` (epoch seconds)."""
    return int(now // window_s)


def _reserve(conn: Connection, ip: str, window: int, limit: int) -> int | None:
    """Count one attempt in `window` unless the limit is reached; the attempts now counted
    (previous window included), or None (nothing written) when the limit is reached."""
    previous = conn.execute(
        select(_A.c.n).where(_A.c.client_ip == ip, _A.c.window_no == window - 1)
    ).scalar_one_or_none() or 0
    cap = limit - previous
    if cap <= 0:
        return None
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    stmt = dialect.insert(_A).values(client_ip=ip, window_no=window, n=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["client_ip", "window_no"],
        set_={"n": _A.c.n + 1},
        where=_A.c.n < cap,
    ).returning(_A.c.n)
    n = conn.execute(stmt).scalar_one_or_none()
    return None if n is None else previous + int(n)


def _release(conn: Connection, ip: str, window: int) -> None:
    conn.execute(update(_A).where(_A.c.client_ip == ip, _A.c.window_no == window,
                                  _A.c.n > 0).values(n=_A.c.n - 1))


def _purge(conn: Connection, before: int) -> int:
    res = conn.execute(delete(_A).where(_A.c.window_no < before))
    return cast("CursorResult[Any]", res).rowcount


class AuthAttemptStore:
    """The `auth_attempt` table on the store's database. Every method raises
    TemporaryError when the store fails."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def reserve(self, ip: str, window: int, limit: int) -> int | None:
        """Reserve one attempt for `ip` in `window`: the attempts counted over this and
        the previous window (this one included), or None when `limit` was reached."""
        with translate_errors("auth attempt reserve", self._db.url):
            return await self._db.batched(lambda conn: _reserve(conn, ip, window, limit))

    async def release(self, ip: str, window: int) -> None:
        """Give back a reservation made in `window` (the login succeeded, or the backend
        could not say)."""
        with translate_errors("auth attempt release", self._db.url):
            await self._db.batched(lambda conn: _release(conn, ip, window))

    async def count(self, ip: str, window: int) -> int:
        """The attempts counted for `ip` over `window` and the one before it."""
        query = select(_A.c.n).where(_A.c.client_ip == ip,
                                     _A.c.window_no.in_((window - 1, window)))
        with translate_errors("auth attempt count", self._db.url):
            rows = await self._db.read(lambda conn: conn.execute(query).scalars().all())
        return sum(int(n) for n in rows)

    async def purge(self, before: int) -> int:
        """Delete the rows of windows before `before`; how many."""
        with translate_errors("auth attempt purge", self._db.url):
            return await self._db.batched(lambda conn: _purge(conn, before))
