"""`[tls]` (STARTTLS, implicit-TLS listeners) and `[auth]` (SMTP AUTH for submission).

Standard library only: the lean entry points load the configuration too. The certificate
itself is loaded (and a bad path refused) when the daemon builds its TLS context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mailguard.settings.base import Invalid, parse_hostport

TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
AUTH_MECHANISMS = ("PLAIN", "LOGIN")  # CRAM-MD5 needs plaintext passwords: not offered


@dataclass(frozen=True)
class TlsConfig:
    # PEM certificate chain; empty = `<qmail_control_dir>/servercert.pem` when that exists
    # (the qmail TLS patch's file, holding key and certificate), else no TLS at all
    cert: str = ""
    key: str = ""  # PEM private key; empty = in the cert file
    smtps_listen: tuple[str, ...] = ()  # implicit-TLS listeners (SMTPS), e.g. "0.0.0.0:465"
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    handshake_timeout_s: float = 30.0  # a TLS handshake taking longer closes the connection

    def validate(self) -> None:
        if self.key and not self.cert:
            raise Invalid("key", "a key without a cert: set tls.cert too")
        for item in self.smtps_listen:
            try:
                parse_hostport(item, 465)
            except ValueError as exc:
                raise Invalid("smtps_listen", str(exc)) from None
        if self.handshake_timeout_s <= 0:
            raise Invalid("handshake_timeout_s", f"must be > 0, got {self.handshake_timeout_s}")


@dataclass(frozen=True)
class AuthConfig:
    enabled: bool = False  # offer SMTP AUTH (authenticated users may relay)
    mechanisms: tuple[str, ...] = AUTH_MECHANISMS  # advertised in this order
    require_tls: bool = True  # AUTH only after STARTTLS (or on an SMTPS listener)
    backend: Literal["users", "checkpassword"] = "users"  # mail_user table, or a program
    # qmail's checkpassword interface: the program and its arguments, e.g.
    # ["/home/vpopmail/bin/vchkpw", "/bin/true"]; it reads user\0password\0time\0 on fd 3
    checkpassword: tuple[str, ...] = ()
    checkpassword_timeout_s: float = 10.0  # slower → 454 temporary failure, program killed
    # failed logins (and those being verified) from one IP within the window, counted in
    # the store for every worker and MX host together → 421, close
    max_failures_per_ip: int = 5
    failure_window_s: float = 600.0
    failure_delay_s: float = 2.0  # each failed login is answered after this delay
    tracked_ips: int = 10_000  # IPs in each process's in-memory first gate (oldest dropped first)

    def validate(self) -> None:
        if not self.mechanisms:
            raise Invalid("mechanisms", "at least one mechanism is needed")
        for mech in self.mechanisms:
            if mech.upper() not in AUTH_MECHANISMS:
                known = ", ".join(AUTH_MECHANISMS)
                raise Invalid("mechanisms", f"unsupported mechanism {mech!r} (known: {known})")
        if self.backend == "checkpassword" and not self.checkpassword:
            raise Invalid("checkpassword", "backend = 'checkpassword' needs the program")
        for key in ("checkpassword_timeout_s", "failure_window_s", "max_failures_per_ip",
                    "tracked_ips"):
            if getattr(self, key) <= 0:
                raise Invalid(key, f"must be > 0, got {getattr(self, key)}")
        if self.failure_delay_s < 0:
            raise Invalid("failure_delay_s", f"must be >= 0, got {self.failure_delay_s}")
