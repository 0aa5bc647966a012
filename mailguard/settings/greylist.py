"""`[greylist]`: greylisting with Postgrey's state model and defaults (see docs/greylist.md).

Whether it runs, and what a store failure means, is `[checks.greylist]` (off unless set)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from mailguard.settings.base import Invalid


@dataclass(frozen=True)
class GreylistConfig:
    delay_s: int = 300  # a triplet is accepted from this many seconds after its first try
    retry_window_h: int = 48  # the first retry must come within this; later = a new first try
    max_age_d: int = 35  # triplets and clients unseen this long are forgotten (purged)
    auto_whitelist_after: int = 5  # successful retries before a client skips greylisting; 0 = off
    # what a triplet's client part is: the client's network ("net", /24 and /64 below), its
    # exact address ("ip"), or the SPF-validated sender domain when SPF passed, else the net
    key: Literal["net", "ip", "spf-domain"] = "net"
    ipv4_prefix: int = 24  # network size for key = "net" (Postgrey: /24)
    ipv6_prefix: int = 64  # network size for key = "net" (one site's /64)
    exempt_clients: tuple[str, ...] = ()  # client CIDRs never greylisted
    exempt_rcpts: tuple[str, ...] = ()  # "user@domain", "@domain" or "user@" never greylisted
    # null-sender bounces: greylisted like any mail (real MTAs retry bounces; Postgrey does
    # the same), or "exempt"
    null_sender: Literal["greylist", "exempt"] = "greylist"
    honour_overrides: bool = True  # an allow entry of `mailguard override` exempts a client

    def validate(self) -> None:
        if self.delay_s < 0:
            raise Invalid("delay_s", f"must be >= 0, got {self.delay_s}")
        if self.retry_window_h <= 0:
            raise Invalid("retry_window_h", f"must be > 0, got {self.retry_window_h}")
        if self.retry_window_h * 3600 <= self.delay_s:
            raise Invalid("retry_window_h", "must be longer than delay_s, or nothing passes")
        if self.max_age_d <= 0:
            raise Invalid("max_age_d", f"must be > 0, got {self.max_age_d}")
        if self.auto_whitelist_after < 0:
            raise Invalid("auto_whitelist_after", f"must be >= 0, got {self.auto_whitelist_after}")
        if not 8 <= self.ipv4_prefix <= 32:
            raise Invalid("ipv4_prefix", f"must be 8..32, got {self.ipv4_prefix}")
        if not 16 <= self.ipv6_prefix <= 128:
            raise Invalid("ipv6_prefix", f"must be 16..128, got {self.ipv6_prefix}")
        for net in self.exempt_clients:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise Invalid("exempt_clients", f"{net!r} is not a CIDR network") from None
        for rcpt in self.exempt_rcpts:
            if "@" not in rcpt or rcpt.count("@") > 1 or rcpt == "@":
                raise Invalid("exempt_rcpts", f"{rcpt!r}: use user@domain, @domain or user@")
