"""The daemon's one DNS resolver, shared by every DNS-using check (DNSBL, SPF, rDNS).

Built once from `[dns]` (see `DnsResolver.from_config`) and passed down. Lookups are
async (dnspython), bounded by `dns.timeout_s`, and cached by TTL in a small LRU keyed by
(name, type), positive answers and NXDOMAIN/no-data alike (RFC 2308: the negative TTL is
the SOA's minimum). Time comes from the injected Clock.

API (kept small on purpose):

- `await r.a(name)`, `await r.aaaa(name)` -> list of address texts, or None when the
  name does not exist or has no such record;
- `await r.txt(name)` -> list of TXT texts (each record's strings joined), or None;
- `await r.query(name, "MX")` -> list of record texts (`rdata.to_text()`), or None;
- `r.sync_resolver()` -> a plain `dns.resolver.Resolver` with the same nameservers and
  timeout, for blocking libraries (pyspf) run in `asyncio.to_thread`.

Failures: a timeout, SERVFAIL/REFUSED from every server or no nameserver at all raise
`TemporaryError`; a name that cannot be a DNS name raises `PermanentError`. "Not found"
is never an exception.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mailguard.clock import Clock
from mailguard.errors import ConfigError, PermanentError, TemporaryError
from mailguard.settings.base import parse_hostport
from mailguard.settings.dns import DnsConfig

MAX_TTL_S = 3600  # cache no answer longer than this, whatever its TTL says
NEGATIVE_TTL_S = 60  # NXDOMAIN/no-data without an SOA to tell us how long

Answer = list[str] | None  # None = NXDOMAIN or no record of that type


@dataclass(frozen=True, slots=True)
class _Entry:
    answer: Answer
    expires: float  # clock.monotonic() value


class TtlCache:
    """An LRU of answers, each kept until its TTL runs out (capped at MAX_TTL_S)."""

    def __init__(self, capacity: int, clock: Clock) -> None:
        self._capacity = capacity
        self._clock = clock
        self._data: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: tuple[str, str]) -> tuple[bool, Answer]:
        """(hit, answer); an expired entry is dropped and counts as a miss."""
        entry = self._data.get(key)
        if entry is None:
            return False, None
        if entry.expires <= self._clock.monotonic():
            del self._data[key]
            return False, None
        self._data.move_to_end(key)
        return True, entry.answer

    def put(self, key: tuple[str, str], answer: Answer, ttl_s: float) -> None:
        if self._capacity <= 0 or ttl_s <= 0:
            return
        self._data[key] = _Entry(answer, self._clock.monotonic() + min(ttl_s, MAX_TTL_S))
        self._data.move_to_end(key)
        while len(self._data) > self._capacity:
            self._data.popitem(last=False)


def _nameservers(config: DnsConfig) -> list[str | dns.nameserver.Nameserver]:
    """`HOST[:PORT]` entries as dnspython nameservers (a port per server)."""
    out: list[str | dns.nameserver.Nameserver] = []
    for item in config.nameservers:
        host, port = parse_hostport(item, 53)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError("dns", "nameservers",
                              f"{item!r}: a nameserver must be an IP address") from None
        out.append(dns.nameserver.Do53Nameserver(host, port))
    return out


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308 section 5: min(SOA TTL, SOA MINIMUM) from the authority section."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                return float(min(rrset.ttl, rrset[0].minimum))
    return NEGATIVE_TTL_S


def _texts(rdtype: str, answer: dns.resolver.Answer) -> list[str]:
    if rdtype == "TXT":
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
    if rdtype in ("A", "AAAA"):
        return [str(r.address) for r in answer]
    return [r.to_text() for r in answer]


class DnsResolver:
    """Async lookups with a TTL cache; see the module docstring for the contract."""

    def __init__(self, config: DnsConfig, clock: Clock) -> None:
        self._config = config
        self._nameservers = _nameservers(config)
        self._resolver = self._configure(dns.asyncresolver.Resolver(configure=False))
        self._cache = TtlCache(config.cache_entries, clock)

    @classmethod
    def from_config(cls, config: DnsConfig, clock: Clock) -> DnsResolver:
        return cls(config, clock)

    def _configure(self, resolver: dns.resolver.BaseResolver) -> dns.resolver.BaseResolver:
        """Our nameservers, or the system's (/etc/resolv.conf) when none are configured."""
        if self._nameservers:
            resolver.nameservers = self._nameservers
        else:
            try:
                resolver.read_resolv_conf("/etc/resolv.conf")
            except (OSError, dns.resolver.NoResolverConfiguration):
                resolver.nameservers = []  # every lookup raises TemporaryError
        resolver.timeout = self._config.timeout_s  # per server try
        resolver.lifetime = self._config.timeout_s  # the whole lookup, retries included
        resolver.cache = None  # ours is keyed and bounded by our clock
        return resolver

    @property
    def timeout_s(self) -> float:
        return self._config.timeout_s

    def sync_resolver(self) -> dns.resolver.Resolver:
        """A blocking resolver with the same servers and timeout (for pyspf in a thread)."""
        resolver = self._configure(dns.resolver.Resolver(configure=False))
        assert isinstance(resolver, dns.resolver.Resolver)
        return resolver

    async def a(self, name: str) -> Answer:
        return await self.query(name, "A")

    async def aaaa(self, name: str) -> Answer:
        return await self.query(name, "AAAA")

    async def txt(self, name: str) -> Answer:
        return await self.query(name, "TXT")

    async def query(self, name: str, rdtype: str) -> Answer:
        """Record texts of `name`/`rdtype` (absolute name assumed), or None if none."""
        key = (name.lower().rstrip("."), rdtype.upper())
        hit, cached = self._cache.get(key)
        if hit:
            return cached
        answer, ttl = await self._lookup(key[0], key[1])
        self._cache.put(key, answer, ttl)
        return answer

    async def _lookup(self, name: str, rdtype: str) -> tuple[Answer, float]:
        if not self._resolver.nameservers:
            raise TemporaryError(f"dns: {name} {rdtype}: no nameservers configured")
        assert isinstance(self._resolver, dns.asyncresolver.Resolver)
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise PermanentError(f"dns: {name!r} is not a valid name: {exc}") from None
        try:
            result = await self._resolver.resolve(
                qname, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[dns.name.Name, dns.message.Message] = exc.kwargs.get("responses", {})
            return None, _negative_ttl(responses.get(qname))
        except dns.resolver.LifetimeTimeout:
            raise TemporaryError(
                f"dns: {name} {rdtype}: timed out after {self._config.timeout_s:g}s"
            ) from None
        except dns.resolver.NoNameservers as exc:
            raise TemporaryError(f"dns: {name} {rdtype}: no server answered ({exc})") from None
        except dns.exception.DNSException as exc:
            raise TemporaryError(f"dns: {name} {rdtype}: {exc}") from None
        if result.rrset is None:
            return None, _negative_ttl(result.response)
        return _texts(rdtype, result), float(result.rrset.ttl)
