"""`[virus]`: who is warned when a message carries a virus, and with which templates.

Standard library only (the lean entry points load the whole configuration)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from mailguard.settings.base import Invalid

# A language tag as used for template directories: "en", "de", "pt-br", "zh_tw".
LANGUAGE_RE = re.compile(r"^[a-z]{2,8}(?:[-_][a-z0-9]{1,8})*$")
# No controls and no white space in an address we put into an envelope or a header.
_ADDRESS_RE = re.compile(r"^[^\x00-\x20\x7f<>]+@[^\x00-\x20\x7f<>@]+$")


@dataclass(frozen=True)
class VirusConfig:
    """Warnings sent when clamd finds a virus. Senders are not warned unless local or
    authenticated: a virus's sender address is almost always forged (backscatter)."""

    notify_recipients: bool = True  # warn the intended local recipients
    notify_admin: bool = True  # warn `admin`
    admin: str = ""  # the admin's address; "" = postmaster@<server.hostname>
    # "local": only a sender in a local domain or an authenticated session;
    # "always": every sender except the null sender <>; "never"
    notify_sender: Literal["local", "always", "never"] = "local"
    from_address: str = ""  # envelope sender of the warnings; "" = null sender <>
    from_header: str = ""  # the From: header; "" = MAILER-DAEMON@<server.hostname>
    templates_dir: str = ""  # admin overrides: <dir>/<lang>/<audience>.txt beat built-ins
    default_language: str = "en"  # when neither the address nor its domain chose one

    def validate(self) -> None:
        for key in ("admin", "from_address"):
            value = getattr(self, key)
            if value and not _ADDRESS_RE.match(value):
                raise Invalid(key, f"{value!r} is not an address like user@domain")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in self.from_header):
            raise Invalid("from_header", "control characters are not allowed")
        if self.templates_dir and not os.path.isdir(self.templates_dir):
            raise Invalid("templates_dir", f"{self.templates_dir!r} is not a directory")
        if not LANGUAGE_RE.match(self.default_language):
            raise Invalid(
                "default_language", f"{self.default_language!r} is not a language tag like 'en'"
            )

    def admin_address(self, hostname: str) -> str:
        """The admin's address: `admin`, else postmaster at the server's host name."""
        return self.admin or f"postmaster@{hostname}"

    def from_header_value(self, hostname: str) -> str:
        return self.from_header or f"MAILER-DAEMON@{hostname}"
