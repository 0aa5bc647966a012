"""Store errors that callers catch without importing SQLAlchemy."""

from __future__ import annotations

from mailguard.errors import MailguardError


class SchemaOutOfDate(MailguardError):
    """The database schema is not the one this mailguard needs; the message says what to run.

    Not a TemporaryError: retrying will not help until an admin acts.
    """

    def __init__(self, message: str, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        super().__init__(message)
