"""Per-IP/network overrides (table `ip_override`): "allow" beats every DNS blocklist,
"deny" blocks. Managed by `mailguard override add|list|remove` (and the admin page);
read by the checks through `OverrideCache`.

"At once on every host": `add`/`remove` also write a new generation token
(`mailguard_setting` row `overrides_generation`) in the same transaction; each lookup
reads that one row (a primary-key read, on SQLite a plain sqlite3 query of a few µs plus
a thread hand-off) and reloads the table only when it changed. Rows edited by hand
without the token are picked up within `refresh_s`.

One entry per network (`add` replaces); the most specific network matching a client wins;
expired entries are kept (the admin sees them in `list`) but never match.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.ext.asyncio import async_sessionmaker

from mailguard.clock import Clock
from mailguard.errors import TemporaryError
from mailguard.netaddr import plain_ip
from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.models import IpOverride, Setting

log = logging.getLogger("mailguard.overrides")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IP = ipaddress.IPv4Address | ipaddress.IPv6Address
OverrideAction = Literal["allow", "deny"]
REFRESH_S = 5.0  # how stale the daemon's copy of the table may be
MAX_STALE_S = 300.0  # past this, a store that cannot be read is an error (not old data)
GENERATION_KEY = "overrides_generation"  # mailguard_setting row changed with every edit
_RAW_GENERATION = "SELECT value FROM mailguard_setting WHERE key = ?"
GENERATION_WAIT_S = 0.25  # a lookup waits this long for the token, then uses its copy


@dataclass(frozen=True, slots=True)
class Override:
    network: str  # canonical CIDR text
    action: OverrideAction
    reason: str
    created_ts: float
    expires_ts: float | None
    created_by: str

    def expired(self, now: float) -> bool:
        return self.expires_ts is not None and self.expires_ts <= now


def canonical_network(text: str) -> str:
    """`192.0.2.0/24`, `2001:db8::/48`, a bare address (= /32, /128) → canonical CIDR.

    Raises ValueError for a malformed network or one with host bits set (a typo more
    often than not: `192.0.2.5/24` is refused with the network it probably meant)."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(text.strip(), strict=False)
            raise ValueError(f"{text!r} has host bits set; did you mean {loose}?") from None
        raise ValueError(f"{text!r} is not an IP network (CIDR)") from None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped:
        mapped = net.network_address.ipv4_mapped
        net = ipaddress.IPv4Network(f"{mapped}/{max(net.prefixlen - 96, 0)}", strict=False)
    return str(net)


def match(entries: Iterable[tuple[Network, Override]], ip: IP, now: float) -> Override | None:
    """The most specific unexpired entry whose network holds `ip` (deny wins a tie)."""
    ip = plain_ip(ip)
    best: tuple[int, bool, Override] | None = None
    for net, entry in entries:
        if net.version != ip.version or ip not in net or entry.expired(now):
            continue
        rank = (net.prefixlen, entry.action == "deny")
        if best is None or rank > best[:2]:
            best = (*rank, entry)
    return best[2] if best else None


def _to_override(row: IpOverride) -> Override:
    action: OverrideAction = "deny" if row.action == "deny" else "allow"
    return Override(row.network, action, row.reason, row.created_ts, row.expires_ts,
                    row.created_by)


class OverrideStore:
    """Repository of `ip_override` rows on the store's database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._engine = db.engine
        self._sessions = async_sessionmaker(db.engine, expire_on_commit=False)

    async def add(self, network: str, action: OverrideAction, *, reason: str = "",
                  now: float, expires_ts: float | None = None,
                  created_by: str = "") -> Override:
        """Create or replace the entry for `network` (canonicalised; ValueError if bad)."""
        net = canonical_network(network)
        if action not in ("allow", "deny"):
            raise ValueError(f"action must be allow or deny, got {action!r}")
        with translate_errors("adding override", self._engine.url):
            async with self._db.session() as s:
                await s.execute(delete(IpOverride).where(IpOverride.network == net))
                row = IpOverride(network=net, action=action, reason=reason, created_ts=now,
                                 expires_ts=expires_ts, created_by=created_by)
                s.add(row)
                await s.execute(self._bump(now))
        return _to_override(row)

    async def remove(self, network: str, *, now: float) -> bool:
        """Delete the entry for `network`; False when there was none."""
        net = canonical_network(network)
        with translate_errors("removing override", self._engine.url):
            async with self._db.session() as s:
                result = await s.execute(delete(IpOverride).where(IpOverride.network == net))
                await s.execute(self._bump(now))
        return cast("CursorResult[Any]", result).rowcount > 0

    async def generation(self) -> str:
        """The token `add`/`remove` change ("" before the first edit)."""
        with translate_errors("reading overrides generation", self._engine.url):
            return await self._db.read(_generation, raw=_generation_raw)

    def _bump(self, now: float) -> Any:
        """A new generation token, written with the edit."""
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        token = secrets.token_hex(8)
        stmt = dialect.insert(Setting).values(key=GENERATION_KEY, value=token, updated_ts=now)
        return stmt.on_conflict_do_update(index_elements=["key"],
                                          set_={"value": token, "updated_ts": now})

    async def list(self) -> list[Override]:
        """Every entry, expired ones included, ordered by network text."""
        with translate_errors("listing overrides", self._engine.url):
            async with self._sessions() as s:
                rows = (await s.scalars(select(IpOverride).order_by(IpOverride.network))).all()
        return [_to_override(r) for r in rows]


class OverrideCache:
    """The daemon's copy of the table, reloaded when the store's generation token changed
    (read per lookup) or the copy is older than `refresh_s`.

    A failed reload keeps the previous copy (logged) for up to `max_stale_s`; after
    that, or when nothing was ever loaded, it raises TemporaryError (the check's
    on_error applies)."""

    def __init__(self, store: OverrideStore, clock: Clock, *, refresh_s: float = REFRESH_S,
                 max_stale_s: float = MAX_STALE_S) -> None:
        self._store = store
        self._clock = clock
        self._refresh_s = refresh_s
        self._max_stale_s = max_stale_s
        self._entries: Sequence[tuple[Network, Override]] = ()
        self._loaded: float | None = None  # clock.monotonic() of the last good load
        self._tried: float | None = None
        self._generation: str | None = None  # the token the loaded copy was read at
        self._generation_task: asyncio.Future[str] | None = None
        self._lock = asyncio.Lock()

    async def match(self, ip: IP) -> Override | None:
        await self._refresh()
        return match(self._entries, ip, self._clock.now())

    async def _refresh(self) -> None:
        try:
            generation: str | None = await self._generation_now()
        except TemporaryError as exc:
            if not self._usable_stale(exc):
                raise
            return
        if self._fresh(generation):
            return
        async with self._lock:
            if self._fresh(generation):
                return  # another connection reloaded it while we waited
            self._tried = self._clock.monotonic()
            try:
                rows = await self._store.list()
            except TemporaryError as exc:
                if not self._usable_stale(exc):
                    raise
                return
            self._entries = list(_parsed(rows))
            self._loaded = self._tried
            self._generation = generation

    async def _generation_now(self) -> str:
        """The store's generation token. One read at a time: lookups that arrive while it
        runs share it. A store that does not answer within GENERATION_WAIT_S raises
        TemporaryError, so a hung database costs each connection that long at most
        while the copy we have may still serve (`_usable_stale`)."""
        task = self._generation_task
        if task is None or task.done():
            task = self._generation_task = asyncio.ensure_future(self._store.generation())
            task.add_done_callback(_consume)
        try:
            return await asyncio.wait_for(asyncio.shield(task), GENERATION_WAIT_S)
        except TimeoutError:
            raise TemporaryError(
                f"overrides generation not read within {GENERATION_WAIT_S:g}s") from None

    def _usable_stale(self, exc: TemporaryError) -> bool:
        """After a failed read: True (logged) when the copy we have may still serve."""
        now = self._clock.monotonic()
        age = None if self._loaded is None else now - self._loaded
        if age is None or age > self._max_stale_s:
            return False
        log.warning("event=override_reload_failed age_s=%.0f error=%r", age, str(exc))
        return True

    def _fresh(self, generation: str | None) -> bool:
        now = self._clock.monotonic()
        return (self._loaded is not None and generation == self._generation
                and self._tried is not None and now - self._tried < self._refresh_s)


def _consume(task: asyncio.Future[str]) -> None:
    """Retrieve a shared read's outcome, so one nobody awaited any more is not reported."""
    if not task.cancelled():
        task.exception()


def _generation(conn: Connection) -> str:
    value = conn.execute(select(Setting.value).where(Setting.key == GENERATION_KEY)).scalar()
    return str(value or "")


def _generation_raw(conn: Any) -> str:
    cur = conn.cursor()
    try:
        row = cur.execute(_RAW_GENERATION, (GENERATION_KEY,)).fetchone()
    finally:
        cur.close()
    return str(row[0]) if row else ""


def _parsed(rows: Iterable[Override]) -> Iterable[tuple[Network, Override]]:
    for o in rows:
        try:
            yield ipaddress.ip_network(o.network), o
        except ValueError:  # written by hand into the table: skip it, say so
            log.warning("event=override_invalid network=%r", o.network)
