"""`[dnsbl]`: DNS blocklists checked at connect (the `dnsbl` check, see docs/dnsbl.md)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from mailguard.settings.base import Invalid

# An accepted answer code: "127.0.0.2", a range "127.0.0.2-127.0.0.11" or a CIDR.
CodeRange = tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")  # RFC 5782: listings are 127/8 answers
ERROR_CODES = ipaddress.IPv4Network("127.255.255.0/24")  # "refused / over quota", never listed
PERM_CODES = (550, 553, 554)


def parse_code(text: str) -> CodeRange:
    """One `codes` entry as an inclusive (first, last) range; raises ValueError."""
    text = text.strip()
    if "/" in text:
        net = ipaddress.IPv4Network(text, strict=False)
        return net.network_address, net.broadcast_address
    first, sep, last = text.partition("-")
    lo = ipaddress.IPv4Address(first.strip())
    hi = ipaddress.IPv4Address(last.strip()) if sep else lo
    if hi < lo:
        raise ValueError(f"range {text!r} ends before it starts")
    return lo, hi


@dataclass(frozen=True)
class DnsblZone:
    """One blocklist zone (a `[[dnsbl.zones]]` table)."""

    zone: str  # e.g. "zen.spamhaus.org"; the client is looked up as <reversed ip>.<zone>
    reply: Literal["temp", "perm"] = "perm"  # temp = 451 4.7.1; perm = perm_code 5.7.1
    perm_code: int = 553  # 553 (rblsmtpd -b) or 550 / 554, for reply = "perm"
    # accepted answers (address, "first-last" range or CIDR); empty = any 127.0.0.0/8
    # answer. Answers in 127.255.255.0/24 or outside 127/8 are errors, never listings.
    codes: tuple[str, ...] = ()
    # reply text when the zone gives no TXT record; {ip} and {zone} are filled in
    message: str = "rejected: {ip} is listed in {zone}"
    on_error: Literal["open", "tempfail"] = "open"  # open = as rblsmtpd; tempfail = rblsmtpd -c

    def validate(self) -> None:
        name = self.zone.strip().rstrip(".")
        if not name or " " in name or ".." in name:
            raise Invalid("zone", f"{self.zone!r} is not a DNS zone name")
        if self.perm_code not in PERM_CODES:
            raise Invalid("perm_code", f"must be one of {PERM_CODES}, got {self.perm_code}")
        for code in self.codes:
            try:
                lo, hi = parse_code(code)
            except ValueError as exc:
                raise Invalid("codes", f"{code!r}: {exc}") from None
            if lo not in LOOPBACK or hi not in LOOPBACK:
                raise Invalid("codes", f"{code!r}: listing codes lie in 127.0.0.0/8")
            if lo in ERROR_CODES or hi in ERROR_CODES:
                raise Invalid("codes", f"{code!r}: 127.255.255.0/24 answers are errors")
        try:
            self.message.format(ip="192.0.2.1", zone=name)
        except (KeyError, IndexError, ValueError) as exc:
            raise Invalid("message", f"bad placeholder ({exc}): use {{ip}} and {{zone}}") from None


@dataclass(frozen=True)
class DnsblConfig:
    """The zones, the anti-zones and the RFC 5782 health probe."""

    zones: tuple[DnsblZone, ...] = ()  # [[dnsbl.zones]] tables, looked up concurrently
    # rblsmtpd -a: an A record for the client in any of these means "don't block"
    anti_zones: tuple[str, ...] = ()
    # RFC 5782 section 5: a zone that lists 127.0.0.1 or does not list 127.0.0.2 is
    # disabled (logged, counted) until a later probe finds it healthy again
    health_probe: bool = False
    health_interval_s: float = 300.0  # seconds between probes (the first at the first connection)
    # how stale the daemon's copy of the override table may be (0 = read it per connection)
    override_refresh_s: float = 5.0

    def validate(self) -> None:
        seen: set[str] = set()
        for zone in self.zones:
            key = zone.zone.lower().rstrip(".")
            if key in seen:
                raise Invalid("zones", f"zone {zone.zone!r} is listed twice")
            seen.add(key)
        for anti in self.anti_zones:
            if not anti.strip().rstrip(".") or " " in anti:
                raise Invalid("anti_zones", f"{anti!r} is not a DNS zone name")
        if self.health_interval_s <= 0:
            raise Invalid("health_interval_s", f"must be > 0, got {self.health_interval_s}")
        if self.override_refresh_s < 0:
            raise Invalid("override_refresh_s", f"must be >= 0, got {self.override_refresh_s}")
