"""Plain records of per-domain / per-user spam settings and SpamAssassin userpref rows
(no SQLAlchemy: the pure disposition code and the CLI output import these)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DomainPrefs:
    """A `mail_domain` row. `spam_action` "" = the configured `[spam] default_action`;
    `spam_box` "" = `<[spam] domain_box_localpart>@<domain>`."""

    domain: str
    spam_enabled: bool = False
    spam_action: str = ""
    spam_box: str = ""
    language: str = ""


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
