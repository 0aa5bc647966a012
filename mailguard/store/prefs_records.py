"""Plain records of per-domain / per-user spam settings and SpamAssassin userpref rows
(no SQLAlchemy: the pure disposition code and the CLI output import these)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DOMAIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")
_ADDRESS_RE = re.compile(r"^[^\x00-\x20\x7f<>@]+@[^\x00-\x20\x7f<>@]+$")
MAX_ADDRESS = 320  # RFC 5321 4.5.3.1: 64 + 1 + 255


def valid_domain(text: str) -> bool:
    """A lower-case DNS name (what `mailguard domain` and the web pages accept)."""
    return len(text) <= 255 and bool(_DOMAIN_RE.match(text))


def valid_address(text: str) -> bool:
    """local@domain without spaces, controls or angle brackets; the domain a valid name
    (lower-case). The local part may hold any other character (o'brien, a+b, %)."""
    local, _, domain = text.rpartition("@")
    return (len(text) <= MAX_ADDRESS and bool(_ADDRESS_RE.match(text))
            and valid_domain(domain) and len(local) <= 64)


@dataclass(frozen=True, slots=True)
class DomainPrefs:
    """A `mail_domain` row. `spam_action` "" = the configured `[spam] default_action`;
    `spam_box` "" = `<[spam] domain_box_localpart>@<domain>`."""

    domain: str
    spam_enabled: bool = False
    spam_action: str = ""
    spam_box: str = ""
    language: str = ""
    users_may_override: bool = True  # may users choose their own filtering and action?


@dataclass(frozen=True, slots=True)
class UserPrefs:
    """A `mail_user` row's own settings: None (or "") = the domain's."""

    address: str
    spam_enabled: bool | None = None
    spam_action: str | None = None
    spam_box: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class PrefRow:
    """A SpamAssassin `userpref` row: username is an address, `@~domain` or `@GLOBAL`."""

    prefid: int
    username: str
    preference: str
    value: str
