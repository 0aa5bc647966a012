"""Web roles (table `web_role`): `domain` "*" makes a login the server admin, any other
domain makes it that domain's admin. Anyone who can log in is a mail user.

Granted with `mailguard role grant USER DOMAIN|*` or on the server admin's web page;
read once per request by the web pages (`WebContext.roles_of`). Users and domains are
stored lower-case; every failure leaves as TemporaryError."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import CursorResult

from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.models import WebRole
from mailguard.store.prefs_records import valid_address, valid_domain

SERVER = "*"


@dataclass(frozen=True, slots=True)
class Roles:
    """What one login may administer."""

    server_admin: bool
    domains: frozenset[str]

    def administers(self, domain: str) -> bool:
        return self.server_admin or domain.lower() in self.domains

    @property
    def any_admin(self) -> bool:
        return self.server_admin or bool(self.domains)

    def covers(self, other: Roles) -> bool:
        """May a holder of these roles act on an account holding `other` (change its
        password, disable it)? Only if that gives it nothing it does not have already:
        a domain admin never takes over the server admin or another domain's admin."""
        if self.server_admin:
            return True
        return not other.server_admin and other.domains <= self.domains


NO_ROLES = Roles(False, frozenset())


def target_error(user: str, domain: str) -> str:
    """Why (`user`, `domain`) cannot be granted, or "" (CLI and web page alike)."""
    if not valid_address(user.strip().lower()):
        return f"{user.strip()[:100]!r} is not an address (the user's login)"
    d = domain.strip().lower()
    if d != SERVER and not valid_domain(d):
        return f"{domain.strip()[:100]!r} is neither a domain nor '*' (server admin)"
    return ""


@dataclass(frozen=True, slots=True)
class Grant:
    """One `web_role` row."""

    user: str
    domain: str  # SERVER = the server admin
    created_ts: float


class RoleStore:
    """Repository of `web_role` rows on the store's database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def roles_of(self, user: str) -> Roles:
        query = select(WebRole.domain).where(WebRole.user == user.strip().lower())
        with translate_errors("reading web roles", self._db.url):
            async with self._db.engine.connect() as conn:
                rows = (await conn.execute(query)).scalars().all()
        return Roles(SERVER in rows, frozenset(d for d in rows if d != SERVER))

    async def grant(self, user: str, domain: str, now: float) -> bool:
        """Give `user` the admin role of `domain` ("*": server admin); False when it
        had it already (nothing changed)."""
        user, domain = user.strip().lower(), domain.strip().lower()
        with translate_errors("granting web role", self._db.url):
            async with self._db.transaction() as conn:
                found = (await conn.execute(select(WebRole.user).where(
                    WebRole.user == user, WebRole.domain == domain))).first()
                if found is not None:
                    return False
                await conn.execute(insert(WebRole).values(
                    user=user, domain=domain, created_ts=now))
        return True

    async def revoke(self, user: str, domain: str) -> bool:
        """Take the role away; False when `user` did not have it."""
        query = delete(WebRole).where(WebRole.user == user.strip().lower(),
                                      WebRole.domain == domain.strip().lower())
        with translate_errors("revoking web role", self._db.url):
            async with self._db.transaction() as conn:
                result = cast("CursorResult[Any]", await conn.execute(query))
        return result.rowcount > 0

    async def list(self, *, domain: str | None = None, user: str | None = None) -> list[Grant]:
        """Every grant (of one domain / one user when given), by domain then user; the
        server admins ("*") first."""
        query = select(WebRole).order_by(WebRole.domain, WebRole.user)
        if domain is not None:
            query = query.where(WebRole.domain == domain.strip().lower())
        if user is not None:
            query = query.where(WebRole.user == user.strip().lower())
        with translate_errors("listing web roles", self._db.url):
            async with self._db.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [Grant(r.user, r.domain, r.created_ts) for r in rows]
