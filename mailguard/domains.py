"""qmail's rcpthosts rule as a value: which domains this server accepts mail for."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LocalDomains:
    """Exact entries, and ".suffix" entries that stand for every subdomain."""

    exact: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> LocalDomains:
        exact: set[str] = set()
        subs: list[str] = []
        for entry in entries:
            e = entry.strip().lower()
            if not e:
                continue
            if e.startswith("."):
                subs.append(e)
            else:
                exact.add(e)
        return cls(frozenset(exact), tuple(subs))

    def __contains__(self, domain: object) -> bool:
        if not isinstance(domain, str):
            return False
        d = domain.lower()
        return d in self.exact or any(d.endswith(s) for s in self.suffixes)
