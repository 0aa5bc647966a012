"""What the QUEUE stage needs from the virus-warning sender (mailguard/notify/virus.py
implements it; the daemon wires it in)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class VirusNotifier(Protocol):
    async def notify(self, original: bytes, sender: str, rcpts: Sequence[str], virus: str, *,
                     authenticated: bool = False) -> None:
        """Send the warnings for a refused message. `original` is the message as it would
        have been queued, `virus` clamd's signature name (untrusted text: sanitise it),
        `authenticated` whether the client logged in (its sender is then ours).
        Failures should raise; the caller logs and counts them, the refusal stands."""
        ...
