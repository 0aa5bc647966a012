"""Spam preferences: `mail_domain` / `mail_user` (mailguard's own switches: filtering
on/off, action, spam box, language) and SpamAssassin's `userpref` table, which spamd
reads itself through `user_scores_dsn` (contrib/spamd-sql.cf).

Addresses and domains are stored lower-case; every failure leaves as TemporaryError.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import CursorResult

from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.models import MailDomain, MailUser, Userpref
from mailguard.store.prefs_records import DomainPrefs, PrefRow, UserPrefs

GLOBAL = "@GLOBAL"  # SpamAssassin's site-wide username
DOMAIN_PREFIX = "@~"  # `@~example.com`: a domain's defaults (our custom query reads them)
_UNSET: Any = object()


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _domain(row: Any) -> DomainPrefs:
    return DomainPrefs(row.domain, bool(row.spam_enabled), row.spam_action or "",
                       row.spam_box or "", row.language or "",
                       row.users_may_override is not False)


def _user(row: Any) -> UserPrefs:
    return UserPrefs(row.address, row.spam_enabled, row.spam_action, row.spam_box,
                     row.language)


class PrefsStore:
    """Repository over mail_domain, mail_user and userpref; takes the daemon's database."""

    def __init__(self, db: Database) -> None:
        self._engine = db.engine
        self._writer = db
        self._url = db.url

    # --- what the QUEUE stage reads -------------------------------------------------------

    async def lookup(
        self, addresses: Iterable[str]
    ) -> tuple[dict[str, UserPrefs], dict[str, DomainPrefs]]:
        """User rows by lower-case address and domain rows by domain, for `addresses`
        (two queries whatever the number of recipients). An address the database cannot
        hold (non-UTF-8 bytes) has no rows: it is left out of the query."""
        given = list(addresses)
        addrs = sorted({a.lower() for a in given if _storable(a)})
        domains = sorted({d for d in map(domain_of, given) if _storable(d)})
        with translate_errors("reading spam preferences", self._url):
            async with self._engine.connect() as conn:
                users = (await conn.execute(
                    select(MailUser).where(MailUser.address.in_(addrs)))).all()
                doms = (await conn.execute(
                    select(MailDomain).where(MailDomain.domain.in_(domains)))).all()
        return ({r.address: _user(r) for r in users}, {r.domain: _domain(r) for r in doms})

    # --- domains ----------------------------------------------------------------------------

    async def domain(self, domain: str) -> DomainPrefs | None:
        query = select(MailDomain).where(MailDomain.domain == domain.lower())
        with translate_errors("reading domain", self._url):
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
        return _domain(row) if row is not None else None

    async def domains(self) -> list[DomainPrefs]:
        with translate_errors("listing domains", self._url):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(select(MailDomain).order_by(MailDomain.domain))).all()
        return [_domain(r) for r in rows]

    async def domain_page(self, *, prefix: str = "", after: str = "",
                          limit: int = 50) -> list[DomainPrefs]:
        """Up to `limit` domains starting with `prefix`, after `after`, in order: one
        walk of the primary key however many domains there are."""
        query = select(MailDomain).order_by(MailDomain.domain).limit(limit)
        if prefix:
            query = query.where(*starts_with(MailDomain.domain, prefix,
                                             self._engine.dialect.name))
        if after:
            query = query.where(MailDomain.domain > after.lower())
        with translate_errors("listing domains", self._url):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [_domain(r) for r in rows]

    async def set_domain(
        self, domain: str, now: float, *, spam_enabled: bool | None = None,
        spam_action: str | None = None, spam_box: str | None = None,
        language: str | None = None, users_may_override: bool | None = None,
    ) -> DomainPrefs:
        """Create or update a domain's row; arguments left None keep their value."""
        domain = domain.lower()
        values = {k: v for k, v in (("spam_enabled", spam_enabled), ("spam_action", spam_action),
                                    ("spam_box", spam_box), ("language", language),
                                    ("users_may_override", users_may_override))
                  if v is not None}
        with translate_errors("writing domain", self._url):
            async with self._writer.transaction() as conn:
                found = (await conn.execute(
                    select(MailDomain.domain).where(MailDomain.domain == domain))).first()
                if found is None:
                    row = {"domain": domain, "spam_enabled": False, "spam_action": "",
                           "spam_box": "", "language": "", "users_may_override": True,
                           **values, "updated_ts": now}
                    await conn.execute(insert(MailDomain).values(**row))
                else:
                    await conn.execute(update(MailDomain).where(MailDomain.domain == domain)
                                       .values(**values, updated_ts=now))
                result = (await conn.execute(
                    select(MailDomain).where(MailDomain.domain == domain))).one()
        return _domain(result)

    # --- users ------------------------------------------------------------------------------

    async def user(self, address: str) -> UserPrefs | None:
        query = select(MailUser).where(MailUser.address == address.lower())
        with translate_errors("reading user", self._url):
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
        return _user(row) if row is not None else None

    async def set_user(
        self, address: str, now: float, *, spam_enabled: bool | None = _UNSET,
        spam_action: str | None = _UNSET, spam_box: str | None = _UNSET,
        language: str | None = _UNSET,
    ) -> UserPrefs:
        """Create or update a user's own settings; None = use the domain's, arguments
        not given keep their value."""
        address = address.lower()
        values = {k: v for k, v in (("spam_enabled", spam_enabled), ("spam_action", spam_action),
                                    ("spam_box", spam_box), ("language", language))
                  if v is not _UNSET}
        with translate_errors("writing user", self._url):
            async with self._writer.transaction() as conn:
                found = (await conn.execute(
                    select(MailUser.address).where(MailUser.address == address))).first()
                if found is None:
                    await conn.execute(insert(MailUser).values(
                        address=address, disabled=False, created_ts=now, **values))
                elif values:
                    await conn.execute(update(MailUser).where(MailUser.address == address)
                                       .values(**values))
                result = (await conn.execute(
                    select(MailUser).where(MailUser.address == address))).one()
        return _user(result)

    # --- SpamAssassin userpref ---------------------------------------------------------------

    async def prefs(self, username: str | None = None) -> list[PrefRow]:
        """userpref rows of `username` (all rows when None), in a stable order."""
        query = select(Userpref).order_by(Userpref.username, Userpref.preference,
                                          Userpref.prefid)
        if username is not None:
            query = query.where(Userpref.username == _username(username))
        with translate_errors("reading userpref", self._url):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [PrefRow(r.prefid, r.username, r.preference, r.value) for r in rows]

    async def set_pref(self, username: str, preference: str, value: str, *,
                       add: bool = False) -> None:
        """Set `preference` (replacing its rows), or with `add` append one more value
        (list preferences such as whitelist_from take several rows)."""
        username = _username(username)
        with translate_errors("writing userpref", self._url):
            async with self._writer.transaction() as conn:
                if not add:
                    await conn.execute(delete(Userpref).where(
                        Userpref.username == username, Userpref.preference == preference))
                await conn.execute(insert(Userpref).values(
                    username=username, preference=preference, value=value))

    async def unset_pref(self, username: str, preference: str, value: str | None = None) -> int:
        """Delete the rows of `preference` (only the one with `value` when given)."""
        cond = [Userpref.username == _username(username), Userpref.preference == preference]
        if value is not None:
            cond.append(Userpref.value == value)
        with translate_errors("deleting userpref", self._url):
            async with self._writer.transaction() as conn:
                result = cast("CursorResult[Any]",
                              await conn.execute(delete(Userpref).where(*cond)))
        return result.rowcount


def starts_with(column: Any, prefix: str, dialect: str) -> list[Any]:
    """Conditions for "`column` starts with `prefix`" (lower-cased, taken literally): a
    LIKE, and on SQLite (binary collation) also the key range it lies in, so the
    primary key's index finds the first match instead of a scan from the start."""
    text = prefix.lower()
    conds = [column.like(like_prefix(text), escape="\\")]
    after = ord(text[-1]) + 1 if text else 0
    if dialect == "sqlite" and after and after <= 0x10FFFF and not 0xD800 <= after < 0xE000:
        conds += [column >= text, column < text[:-1] + chr(after)]
    return conds


def like_prefix(prefix: str) -> str:
    """A LIKE pattern for "starts with `prefix`" (lower-cased), its %, _ and \\ taken
    literally (with `escape="\\"`)."""
    text = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return text + "%"


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _username(name: str) -> str:
    """Addresses and `@~domain` lower-case (spamd gets `User:` lower-case too); @GLOBAL
    keeps SpamAssassin's spelling."""
    return name if name == GLOBAL else name.lower()
