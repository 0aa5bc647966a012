"""Language preferences for warnings from the preference store: the user's
`mail_user.language`, else the domain's `mail_domain.language`, else None (the
configured default then applies). One batched lookup per infected message, done before
the warnings are built, so that building stays pure and synchronous."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

# addresses -> {address: language or None}
LanguageLookup = Callable[[Sequence[str]], Awaitable[Mapping[str, str | None]]]


class _HasLanguage(Protocol):
    @property
    def language(self) -> str | None: ...


class PrefsLookup(Protocol):
    """What `store.prefs.PrefsStore.lookup` offers: user rows by lower-case address and
    domain rows by lower-case domain."""

    async def lookup(
        self, addresses: Iterable[str]
    ) -> tuple[Mapping[str, _HasLanguage], Mapping[str, _HasLanguage]]: ...


def prefs_languages(prefs: PrefsLookup) -> LanguageLookup:
    """A LanguageLookup backed by the preference store (user, then domain)."""

    async def languages(addresses: Sequence[str]) -> Mapping[str, str | None]:
        users, domains = await prefs.lookup(addresses)
        out: dict[str, str | None] = {}
        for addr in addresses:
            user = users.get(addr.lower())
            domain = domains.get(addr.rpartition("@")[2].lower())
            out[addr] = (user and user.language) or (domain and domain.language) or None
        return out

    return languages
