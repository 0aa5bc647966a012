"""What every credential backend offers."""

from __future__ import annotations

from typing import Protocol


class Authenticator(Protocol):
    """Checks a username and password.

    Returns the identity to record (`session.auth_user`) when they are right, None when
    they are wrong; raises TemporaryError when it cannot tell (database down, program
    timed out) so the client gets a 454 and may retry."""

    name: str

    async def verify(self, username: str, password: str, *, client_ip: str) -> str | None: ...
