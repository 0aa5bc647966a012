"""Greylisting state (tables `greylist` and `greylist_client`), shared by every MX host
that uses the same database.

`update()` reads a triplet and its client in one transaction, lets a pure function decide,
and writes what it returns. Two hosts may see the same triplet at once: on SQLite the
transaction takes the write lock up front (BEGIN IMMEDIATE); on PostgreSQL the rows are
read FOR UPDATE, and a concurrent first insert (IntegrityError) retries the whole
transaction, which then sees the other host's row (`Database.batched`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy import Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.pool import PoolProxiedConnection

from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.greylist_records import (
    ClientState,
    GreylistStats,
    TripletRow,
    TripletState,
)
from mailguard.store.models import GreylistClient, GreylistEntry

T = TypeVar("T")
Decide = Callable[
    [TripletState | None, ClientState | None], tuple[TripletState | None, ClientState | None, T]
]

_G = cast(Table, GreylistEntry.__table__)
_C = cast(Table, GreylistClient.__table__)


class GreylistStore:
    """Repository of the greylisting tables on the store's database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._engine = db.engine

    async def update(self, client_key: str, sender: str, rcpt: str, decide: Decide[T]) -> T:
        """Read the triplet and the client, call `decide(triplet, client)` -> (new
        triplet, new client, result), write the non-None states, return the result.

        The read runs first without the write lock: when `decide` writes nothing (a
        known triplet or a whitelisted client, most mail) that is all. Otherwise the
        read and the decision are repeated inside the write transaction, so concurrent
        sessions (and hosts) decide on the state they will overwrite.
        """
        with translate_errors("greylist update", self._engine.url):
            entry, client = await self._db.read(
                lambda conn: _read(conn, client_key, sender, rcpt, lock=False),
                raw=lambda conn: _read_raw(conn, client_key, sender, rcpt),
                pg=lambda conn: _read_pg(conn, client_key, sender, rcpt))
            new_entry, new_client, result = decide(entry, client)
            if new_entry is None and new_client is None:
                return result
            return await self._db.batched(
                lambda conn: _write(conn, client_key, sender, rcpt, decide))

    async def allow(self, client_key: str, passes: int, now: float) -> ClientState:
        """Whitelist a client key: its passes become at least `passes`."""

        def write(conn: Connection) -> ClientState:
            crow = conn.execute(
                select(_C.c.passes, _C.c.first_seen)
                .where(_C.c.client_key == client_key).with_for_update()
            ).first()
            state = ClientState(max(passes, crow[0]) if crow else passes,
                                crow[1] if crow else now, now)
            _put_client(conn, client_key, state, exists=crow is not None)
            return state

        with translate_errors("greylist allow", self._engine.url):
            return await self._db.batched(write)

    async def purge(self, now: float, max_age_s: float, retry_window_s: float) -> tuple[int, int]:
        """Forget triplets unseen for `max_age_s`, pending ones unseen for the retry window
        (their next try starts over anyway), and clients unseen for `max_age_s`.
        Returns (triplets, clients) deleted."""
        old = now - max_age_s
        stale = and_(_G.c.passed_ts.is_(None), _G.c.last_seen < now - retry_window_s)
        with translate_errors("greylist purge", self._engine.url):
            async with self._db.transaction() as conn:
                res_t = await conn.execute(delete(_G).where(or_(_G.c.last_seen < old, stale)))
                res_c = await conn.execute(delete(_C).where(_C.c.last_seen < old))
        return (cast("CursorResult[Any]", res_t).rowcount,
                cast("CursorResult[Any]", res_c).rowcount)

    async def triplets(self, limit: int = 50) -> list[TripletRow]:
        """The most recently seen triplets, newest first."""
        query = (select(_G.c.client_key, _G.c.sender, _G.c.rcpt, _G.c.first_seen,
                        _G.c.last_seen, _G.c.passed_ts, _G.c.deferrals)
                 .order_by(_G.c.last_seen.desc()).limit(limit))
        with translate_errors("greylist list", self._engine.url):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [TripletRow(r[0], r[1], r[2], TripletState(r[3], r[4], r[5], r[6])) for r in rows]

    async def client(self, client_key: str) -> ClientState | None:
        with translate_errors("greylist client", self._engine.url):
            async with self._engine.connect() as conn:
                row = (await conn.execute(
                    select(_C.c.passes, _C.c.first_seen, _C.c.last_seen)
                    .where(_C.c.client_key == client_key)
                )).first()
        return ClientState(row[0], row[1], row[2]) if row else None

    async def stats(self, whitelist_after: int) -> GreylistStats:
        """Counts; `whitelisted` = clients with at least `whitelist_after` passes (0 = off)."""
        passed = func.count(_G.c.passed_ts)  # COUNT(column) skips NULLs
        with translate_errors("greylist stats", self._engine.url):
            async with self._engine.connect() as conn:
                total, n_passed = (await conn.execute(select(func.count(), passed)
                                                      .select_from(_G))).one()
                clients = (await conn.execute(select(func.count()).select_from(_C))).scalar_one()
                white = 0
                if whitelist_after > 0:
                    white = (await conn.execute(
                        select(func.count()).select_from(_C)
                        .where(_C.c.passes >= whitelist_after)
                    )).scalar_one()
        return GreylistStats(int(total), int(n_passed), int(total) - int(n_passed),
                             int(clients), int(white))


def _read(conn: Connection, client_key: str, sender: str, rcpt: str, *,
          lock: bool) -> tuple[TripletState | None, ClientState | None]:
    where = and_(_G.c.client_key == client_key, _G.c.sender == sender, _G.c.rcpt == rcpt)
    q_entry = select(_G.c.first_seen, _G.c.last_seen, _G.c.passed_ts,
                     _G.c.deferrals).where(where)
    q_client = select(_C.c.passes, _C.c.first_seen, _C.c.last_seen).where(
        _C.c.client_key == client_key)
    if lock:
        q_entry, q_client = q_entry.with_for_update(), q_client.with_for_update()
    row = conn.execute(q_entry).first()
    crow = conn.execute(q_client).first()
    return (TripletState(row[0], row[1], row[2], row[3]) if row else None,
            ClientState(crow[0], crow[1], crow[2]) if crow else None)


# `_read` as plain SQL for SQLite files (Database.read: the per-RCPT lookup)
_RAW_ENTRY = ("SELECT first_seen, last_seen, passed_ts, deferrals FROM greylist "
              "WHERE client_key = ? AND sender = ? AND rcpt = ?")
_RAW_CLIENT = "SELECT passes, first_seen, last_seen FROM greylist_client WHERE client_key = ?"


def _read_raw(conn: PoolProxiedConnection, client_key: str, sender: str,
              rcpt: str) -> tuple[TripletState | None, ClientState | None]:
    cur = conn.cursor()
    try:
        row = cur.execute(_RAW_ENTRY, (client_key, sender, rcpt)).fetchone()
        crow = cur.execute(_RAW_CLIENT, (client_key,)).fetchone()
    finally:
        cur.close()
    return (TripletState(row[0], row[1], row[2], row[3]) if row else None,
            ClientState(crow[0], crow[1], crow[2]) if crow else None)


# `_read` as one statement for asyncpg (PostgreSQL: one round trip, no transaction)
_PG_READ = ("SELECT g.first_seen, g.last_seen, g.passed_ts, g.deferrals, c.passes, "
            "c.first_seen, c.last_seen FROM (SELECT 1) AS one "
            "LEFT JOIN greylist g ON g.client_key = $1 AND g.sender = $2 AND g.rcpt = $3 "
            "LEFT JOIN greylist_client c ON c.client_key = $1")


async def _read_pg(conn: Any, client_key: str, sender: str,
                   rcpt: str) -> tuple[TripletState | None, ClientState | None]:
    r = await conn.fetchrow(_PG_READ, client_key, sender, rcpt)
    return (TripletState(r[0], r[1], r[2], r[3]) if r[0] is not None else None,
            ClientState(r[4], r[5], r[6]) if r[4] is not None else None)


def _write(conn: Connection, client_key: str, sender: str, rcpt: str, decide: Decide[T]) -> T:
    entry, client = _read(conn, client_key, sender, rcpt, lock=True)
    new_entry, new_client, result = decide(entry, client)
    if new_entry is not None:
        values = {
            "first_seen": new_entry.first_seen,
            "last_seen": new_entry.last_seen,
            "passed_ts": new_entry.passed_ts,
            "deferrals": new_entry.deferrals,
        }
        if entry is None:
            conn.execute(insert(_G).values(
                client_key=client_key, sender=sender, rcpt=rcpt, **values))
        else:
            where = and_(_G.c.client_key == client_key, _G.c.sender == sender,
                         _G.c.rcpt == rcpt)
            conn.execute(update(_G).where(where).values(**values))
    if new_client is not None:
        _put_client(conn, client_key, new_client, exists=client is not None)
    return result


def _put_client(conn: Connection, client_key: str, state: ClientState, *,
                exists: bool) -> None:
    values = {"passes": state.passes, "first_seen": state.first_seen,
              "last_seen": state.last_seen}
    if exists:
        conn.execute(update(_C).where(_C.c.client_key == client_key).values(**values))
    else:
        conn.execute(insert(_C).values(client_key=client_key, **values))
