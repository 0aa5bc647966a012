"""`[web]`: the users' and admins' web page (`mailguard web`, docs/web.md)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mailguard.settings.base import Invalid, parse_hostport


@dataclass(frozen=True)
class WebConfig:
    listen: str = "127.0.0.1:8025"  # HOST:PORT of `mailguard web`
    # TLS served by mailguard web itself; empty = plain HTTP (behind a reverse proxy)
    tls_cert: str = ""
    tls_key: str = ""
    # the session cookie is `Secure` (sent over HTTPS only); false only for plain-HTTP
    # testing on localhost
    cookie_secure: bool = True
    # reverse proxies whose X-Forwarded-For / -Proto are believed (CIDRs)
    trusted_proxies: tuple[str, ...] = ()
    session_idle_s: int = 1800  # a session unused this long is over
    session_max_s: int = 43200  # and any session after this long
    login_window_s: int = 900  # login failures are counted over this window
    max_failures_per_ip: int = 10  # more in the window: 429 until it passes
    max_failures_per_account: int = 5

    def validate(self) -> None:
        try:
            parse_hostport(self.listen, 8025)
        except ValueError as exc:
            raise Invalid("listen", str(exc)) from None
        if self.tls_key and not self.tls_cert:
            raise Invalid("tls_key", "a key without a cert: set web.tls_cert too")
        for net in self.trusted_proxies:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise Invalid("trusted_proxies", f"{net!r} is not a CIDR network") from None
        for key in ("session_idle_s", "session_max_s", "login_window_s",
                    "max_failures_per_ip", "max_failures_per_account"):
            if getattr(self, key) <= 0:
                raise Invalid(key, f"must be > 0, got {getattr(self, key)}")
