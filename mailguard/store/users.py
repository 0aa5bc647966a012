"""Per-user outbound counters (`user_event`), suspension/alert state (`user_state`) and
global switches (`mailguard_setting`, e.g. the panic switch), shared by every MX host.

Counters are sums over event rows in a sliding window: one row per accepted message,
so concurrent sessions never lose an update. Every failure leaves as TemporaryError.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection

from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.models import Setting, UserEvent, UserState
from mailguard.store.user_records import UserActivity, UserDetail, UserStatus, WindowCount

PANIC = "panic"  # mailguard_setting key: "on" stops all relaying on every MX host
DETAIL_ROWS = 2_000  # newest events read for `user show` / alerts (top domains, subjects)


def _status(row: Any) -> UserStatus:
    return UserStatus(
        user=row.user,
        suspended=bool(row.suspended),
        suspended_ts=row.suspended_ts,
        reason=row.reason or "",
        last_alert_ts=row.last_alert_ts,
        alerts=int(row.alerts or 0),
    )


def _window_columns(now: float, periods: Sequence[int]) -> list[Any]:
    cols: list[Any] = []
    for p in periods:
        inside = UserEvent.ts > now - p
        cols.append(func.coalesce(func.sum(case((inside, UserEvent.messages), else_=0)), 0))
        cols.append(func.coalesce(func.sum(case((inside, UserEvent.rcpts), else_=0)), 0))
    return cols


def _counts(values: Sequence[Any], periods: Sequence[int]) -> tuple[WindowCount, ...]:
    return tuple(
        WindowCount(p, int(values[2 * i] or 0), int(values[2 * i + 1] or 0))
        for i, p in enumerate(periods)
    )


class UserStore:
    """Repository for the per-user tables; takes the daemon's (or CLI's) database."""

    def __init__(self, db: Database) -> None:
        self._engine = db.engine
        self._writer = db
        self._url = db.url

    def _insert(self, table: Any) -> Any:
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    async def _ensure_state(self, conn: AsyncConnection, user: str) -> None:
        stmt = self._insert(UserState).values(user=user, suspended=False, reason="", alerts=0)
        await conn.execute(stmt.on_conflict_do_nothing(index_elements=["user"]))

    # --- counters -------------------------------------------------------------------------

    async def usage(self, user: str, now: float, periods: Sequence[int]) -> tuple[WindowCount, ...]:
        """Messages and recipients of `user` in each window (ts > now - period)."""
        if not periods:
            return ()
        query = select(*_window_columns(now, periods)).where(
            UserEvent.user == user, UserEvent.ts > now - max(periods)
        )
        with translate_errors("reading user counters", self._url):
            # one hand-off to a reader thread, where aiosqlite costs about four
            row = await self._writer.read(lambda conn: tuple(conn.execute(query).one()))
        return _counts(row, periods)

    async def record_event(self, user: str, ts: float, rcpts: int, *, domains: Sequence[str],
                           subject: str, keep_s: int) -> None:
        """One accepted message; the user's events older than `keep_s` (out of every
        window) are deleted on the way, which keeps the table small."""
        row = {"user": user, "ts": ts, "messages": 1, "rcpts": rcpts,
               "rcpt_domains": ",".join(domains), "subject": subject}
        with translate_errors("recording user event", self._url):
            async with self._writer.transaction() as conn:
                await conn.execute(self._insert(UserEvent).values(**row))
                await conn.execute(
                    delete(UserEvent).where(UserEvent.user == user, UserEvent.ts <= ts - keep_s)
                )

    # --- state ----------------------------------------------------------------------------

    async def status(self, user: str) -> UserStatus:
        query = select(UserState).where(UserState.user == user)
        with translate_errors("reading user state", self._url):
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
        return _status(row) if row is not None else UserStatus(user)

    async def suspend(self, user: str, reason: str, ts: float) -> None:
        with translate_errors("suspending user", self._url):
            async with self._writer.transaction() as conn:
                await self._ensure_state(conn, user)
                await conn.execute(
                    update(UserState)
                    .where(UserState.user == user)
                    .values(suspended=True, suspended_ts=ts, reason=reason)
                )

    async def unsuspend(self, user: str) -> bool:
        """Lift a suspension. The incident stays open (last_alert_ts is kept): a user
        still over a limit is refused, but not alerted on and suspended again at once.
        False when the user was not suspended."""
        with translate_errors("unsuspending user", self._url):
            async with self._writer.transaction() as conn:
                result = cast("CursorResult[Any]", await conn.execute(
                    update(UserState)
                    .where(UserState.user == user, UserState.suspended.is_(True))
                    .values(suspended=False, suspended_ts=None, reason="")
                ))
        return result.rowcount > 0

    async def suspended(self, *, domain: str = "", after: str = "",
                        limit: int = 50) -> list[UserStatus]:
        """Suspended users (of `domain` when given), by name after `after`."""
        from mailguard.store.prefs import like_prefix  # noqa: PLC0415

        query = (select(UserState).where(UserState.suspended.is_(True))
                 .order_by(UserState.user).limit(limit))
        if domain:
            query = query.where(UserState.user.like("%@" + like_prefix(domain)[:-1],
                                                    escape="\\"))
        if after:
            query = query.where(UserState.user > after)
        with translate_errors("listing suspended users", self._url):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [_status(r) for r in rows]

    async def claim_alert(self, user: str, now: float, not_after: float) -> bool:
        """Start an incident: True for exactly one caller (across sessions and MX hosts)
        when the user's last alert is older than `not_after` (or there is none)."""
        with translate_errors("claiming user alert", self._url):
            async with self._writer.transaction() as conn:
                await self._ensure_state(conn, user)
                result = cast("CursorResult[Any]", await conn.execute(
                    update(UserState)
                    .where(UserState.user == user,
                           or_(UserState.last_alert_ts.is_(None),
                               UserState.last_alert_ts <= not_after))
                    .values(last_alert_ts=now, alerts=UserState.alerts + 1)
                ))
        return result.rowcount > 0

    async def release_alert(self, user: str) -> None:
        """Undo `claim_alert` when the alert could not be sent: the next crossing retries."""
        with translate_errors("releasing user alert", self._url):
            async with self._writer.transaction() as conn:
                await conn.execute(
                    update(UserState)
                    .where(UserState.user == user, UserState.alerts > 0)
                    .values(last_alert_ts=None, alerts=UserState.alerts - 1)
                )

    # --- reports --------------------------------------------------------------------------

    async def activity(self, now: float, periods: Sequence[int]) -> list[UserActivity]:
        """Users with events in the longest window, or with a state row (suspended or
        alerted), sorted by name."""
        longest = max(periods, default=0)
        counted = (
            select(UserEvent.user, *_window_columns(now, periods))
            .where(UserEvent.ts > now - longest)
            .group_by(UserEvent.user)
        )
        with translate_errors("listing users", self._url):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(counted)).all() if periods else []
                states = (await conn.execute(select(UserState))).all()
        by_user = {r[0]: _counts(tuple(r)[1:], periods) for r in rows}
        status = {s.user: _status(s) for s in states}
        empty = tuple(WindowCount(p) for p in periods)
        names = sorted(set(by_user) | set(status))
        return [UserActivity(status.get(n, UserStatus(n)), by_user.get(n, empty)) for n in names]

    async def detail(self, user: str, now: float, periods: Sequence[int], *,
                     top: int = 10, subjects: int = 5) -> UserDetail | None:
        """Counts, top recipient domains and the newest subjects in the longest window;
        None when nothing at all is known about the user."""
        longest = max(periods, default=0)
        counts = await self.usage(user, now, periods)
        status = await self.status(user)
        query = (
            select(UserEvent.ts, UserEvent.rcpt_domains, UserEvent.subject)
            .where(UserEvent.user == user, UserEvent.ts > now - longest)
            .order_by(UserEvent.ts.desc(), UserEvent.id.desc())
            .limit(DETAIL_ROWS)
        )
        with translate_errors("reading user events", self._url):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
                known = (await conn.execute(
                    select(func.count()).select_from(UserState).where(UserState.user == user)
                )).scalar_one()
        if not rows and not known:
            return None
        domains: Counter[str] = Counter()
        for _, joined, _ in rows:
            domains.update(d for d in joined.split(",") if d)
        recent = tuple((ts, subj) for ts, _, subj in rows if subj)[:subjects]
        ranked = tuple(sorted(domains.items(), key=lambda kv: (-kv[1], kv[0]))[:top])
        return UserDetail(status, counts, ranked, recent)

    # --- global switches ------------------------------------------------------------------

    async def get_setting(self, key: str) -> str | None:
        query = select(Setting.value).where(Setting.key == key)
        with translate_errors("reading setting", self._url):
            async with self._engine.connect() as conn:
                return (await conn.execute(query)).scalar_one_or_none()

    async def set_setting(self, key: str, value: str, ts: float) -> None:
        stmt = self._insert(Setting).values(key=key, value=value, updated_ts=ts)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"], set_={"value": value, "updated_ts": ts}
        )
        with translate_errors("writing setting", self._url):
            async with self._writer.transaction() as conn:
                await conn.execute(stmt)

    async def panic(self) -> bool:
        return (await self.get_setting(PANIC)) == "on"
