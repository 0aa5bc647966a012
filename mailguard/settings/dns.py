"""`[dns]`: the resolver every DNS-using check shares (DNSBL, SPF, rDNS)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mailguard.settings.base import Invalid, parse_hostport


@dataclass(frozen=True)
class DnsConfig:
    # "HOST" or "HOST:PORT" ([v6]:PORT); empty = the system's /etc/resolv.conf
    nameservers: tuple[str, ...] = ()
    timeout_s: float = 5.0  # one lookup, all retries included
    cache_entries: int = 10_000  # answers kept (by TTL) per process

    def validate(self) -> None:
        for ns in self.nameservers:
            try:
                host, _ = parse_hostport(ns, 53)
                ipaddress.ip_address(host)  # dnspython needs addresses, not names
            except ValueError as exc:
                raise Invalid("nameservers", f"{ns!r}: {exc}") from None
        if self.timeout_s <= 0:
            raise Invalid("timeout_s", f"must be > 0, got {self.timeout_s}")
        if self.cache_entries < 0:
            raise Invalid("cache_entries", f"must be >= 0, got {self.cache_entries}")
