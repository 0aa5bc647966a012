"""IP address helpers every layer shares (qmail rules, checks, the SMTP front end, the
store). Standard library only: the lean entry points may import it."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def plain_ip(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (::ffff:192.0.2.1) as the IPv4 address it stands for.

    A dual-stack listener reports IPv4 clients that way; blocklists, greylisting, SPF and
    overrides must see the IPv4 client, or `192.0.2.0/24` would never match it."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


__all__ = ["IPAddress", "plain_ip"]
