"""Passwords in mailguard's own `mail_user` table, as argon2id hashes (argon2-cffi).

Hashing is deliberately slow (tens of milliseconds, 64 MiB), so it runs in a thread.
Unknown, disabled and password-less accounts are checked against a dummy hash as well,
so the reply time does not tell which addresses exist."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailguard.store.accounts import AccountStore


def hash_password(password: str, hasher: PasswordHasher | None = None) -> str:
    """The hash to store (blocking: call it in a thread from async code)."""
    return (hasher or PasswordHasher()).hash(password)


def password_matches(hasher: PasswordHasher, stored: str, password: str) -> bool:
    """Blocking argon2 verification; a corrupt stored hash counts as a mismatch."""
    try:
        return hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


class UserTableAuth:
    """Backend `users`: the `mail_user` row with the login name as address."""

    name = "users"

    def __init__(self, accounts: AccountStore, hasher: PasswordHasher | None = None) -> None:
        self._accounts = accounts
        self._hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    async def verify(self, username: str, password: str, *, client_ip: str) -> str | None:
        account = await self._accounts.get(username)  # TemporaryError when the store fails
        stored = account.password_hash if account and not account.disabled else None
        if account is None or not stored:
            dummy = await self._dummy_hash()
            await asyncio.to_thread(password_matches, self._hasher, dummy, password)
            return None
        ok = await asyncio.to_thread(password_matches, self._hasher, stored, password)
        return account.address if ok else None

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await asyncio.to_thread(self._hasher.hash, secrets.token_hex(16))
        return self._dummy
