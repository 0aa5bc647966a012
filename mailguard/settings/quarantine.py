"""`[quarantine]`: mailguard's own quarantine (docs/quarantine.md).

Empty `directory` = no quarantine: the spam action "quarantine" then falls back to
"tag" (delivered, never lost), and the web page does not offer it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mailguard.settings.base import Invalid


@dataclass(frozen=True)
class QuarantineConfig:
    # where quarantined copies are kept (one file each, a row in the store lists it);
    # on the store's host for SQLite, a shared filesystem for several MX hosts
    directory: str = ""
    days: int = 30  # a held message is purged this many days after it arrived
    # keep a copy of virus-infected mail too (refused 554 as before; only admins may
    # release it)
    viruses: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.directory)

    def validate(self) -> None:
        if self.directory and not os.path.isabs(self.directory):
            raise Invalid("directory", f"must be an absolute path, got {self.directory!r}")
        if self.days <= 0:
            raise Invalid("days", f"must be > 0, got {self.days}")
        if self.viruses and not self.directory:
            raise Invalid("viruses", "needs quarantine.directory")
