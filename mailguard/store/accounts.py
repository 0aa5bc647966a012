"""Mail accounts (`mail_user`): the credentials SMTP AUTH checks and `mailguard account`
manages. Addresses are stored lower-case; every failure leaves as TemporaryError."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import async_sessionmaker

from mailguard.store.database import Database
from mailguard.store.engine import translate_errors
from mailguard.store.models import MailUser

MIN_PASSWORD = 8  # refused below this (CLI and web page): AUTH is open to the whole internet


@dataclass(frozen=True, slots=True)
class Account:
    address: str
    password_hash: str | None
    disabled: bool
    created_ts: float


def normalise(address: str) -> str:
    return address.strip().lower()


class AccountStore:
    """The `mail_user` rows, by address."""

    def __init__(self, db: Database, url: str = "") -> None:
        self._url = url or str(db.url)
        self._sessions = async_sessionmaker(db.engine, expire_on_commit=False)
        self._writer = db

    async def get(self, address: str) -> Account | None:
        with translate_errors("reading mail user", self._url):
            async with self._sessions() as session:
                row = await session.get(MailUser, normalise(address))
        return None if row is None else _account(row)

    async def list(self) -> list[Account]:
        with translate_errors("listing mail users", self._url):
            async with self._sessions() as session:
                rows = (await session.scalars(select(MailUser).order_by(MailUser.address))).all()
        return [_account(r) for r in rows]

    async def page(self, *, domain: str = "", prefix: str = "", after: str = "",
                   limit: int = 50) -> builtins.list[Account]:
        """Up to `limit` accounts (of `domain` when given) starting with `prefix`, after
        `after`, in address order: a walk of the primary key that stops at `limit`."""
        from mailguard.store.prefs import like_prefix, starts_with  # noqa: PLC0415

        query = select(MailUser).order_by(MailUser.address).limit(limit)
        if domain:
            pattern = "%@" + like_prefix(domain)[:-1]
            query = query.where(MailUser.address.like(pattern, escape="\\"))
        if prefix:
            query = query.where(*starts_with(MailUser.address, prefix,
                                             self._writer.engine.dialect.name))
        if after:
            query = query.where(MailUser.address > normalise(after))
        with translate_errors("listing mail users", self._url):
            async with self._sessions() as session:
                rows = (await session.scalars(query)).all()
        return [_account(r) for r in rows]

    async def add(self, address: str, password_hash: str | None, now: float) -> bool:
        """Create the account; False when it already exists (nothing changed)."""
        addr = normalise(address)
        with translate_errors("adding mail user", self._url):
            async with self._writer.session() as session:
                if await session.get(MailUser, addr) is not None:
                    return False
                session.add(_new_row(addr, password_hash, now))
        return True

    async def set_password(self, address: str, password_hash: str, now: float) -> bool:
        """Set or replace the password, creating the account if missing; True if created."""
        addr = normalise(address)
        with translate_errors("setting password", self._url):
            async with self._writer.session() as session:
                row = await session.get(MailUser, addr)
                if row is None:
                    session.add(_new_row(addr, password_hash, now))
                    return True
                row.password_hash = password_hash
        return False

    async def set_disabled(self, address: str, disabled: bool) -> bool:
        """False when there is no such account."""
        query = (
            update(MailUser).where(MailUser.address == normalise(address)).values(disabled=disabled)
        )
        return await self._change(query, "disabling mail user")

    async def delete(self, address: str) -> bool:
        """False when there is no such account."""
        query = delete(MailUser).where(MailUser.address == normalise(address))
        return await self._change(query, "deleting mail user")

    async def _change(self, query: Any, what: str) -> bool:
        with translate_errors(what, self._url):
            async with self._writer.session() as session:
                result = cast("CursorResult[Any]", await session.execute(query))
        return result.rowcount > 0


def _new_row(address: str, password_hash: str | None, now: float) -> MailUser:
    return MailUser(address=address, password_hash=password_hash, disabled=False, created_ts=now)


def _account(row: MailUser) -> Account:
    return Account(row.address, row.password_hash, bool(row.disabled), row.created_ts)
