"""The delivery interface: what the front end hands accepted mail to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mailguard.body import Message
from mailguard.verdict import Reply


@dataclass(frozen=True, slots=True)
class Delivered:
    """The outcome of one hand-over. `reply` is what the client gets for DATA: a 250 only
    when the message is safely stored; a local fault is always a 4xx."""

    accepted: bool
    reply: Reply
    queue_id: str = ""
    # the qmail-queue exit status behind `reply` when a queue program answered (None for
    # other hand-overs): the QMAILQUEUE wrapper passes it on unchanged
    exit_code: int | None = None


class Delivery(Protocol):
    async def deliver(self, sender: str, rcpts: Sequence[str], message: Message, *,
                      authenticated: bool = False) -> Delivered:
        """Hand over `message` (LF line ends, qmail's stored form; bytes or a Body,
        possibly spooled to disk: stream it, never read it whole) for `rcpts`.
        `authenticated`: the client logged in (SMTP AUTH), so the sender is known to be
        ours — the scanning wrapper may then warn it about a virus; plain hand-overs
        ignore it."""
        ...


@runtime_checkable
class RefusesRecipients(Protocol):
    """A delivery that knows at RCPT time which recipients it can never store (a Maildir
    spool cannot name some addresses): the conversation asks it and refuses those at
    RCPT, so one such recipient never fails the message for the others at DATA."""

    def refuses(self, rcpt: str) -> Reply | None:
        """The permanent reply for `rcpt` (qualified), or None when it can be stored."""
        ...
