"""Recipients that share a disposition are queued together, once, with their own copy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mailguard.checks.virus_scan import VIRUS_HEADER
from mailguard.headers import header_line
from mailguard.verdict import KEEP, Disposition

SPAM_HEADER_PREFIX = "x-spam-"  # incoming X-Spam-* are never trusted: dropped before ours
ORIGINAL_RCPT_HEADER = "X-MailGuard-Original-Recipient"
OUR_HEADERS = frozenset({VIRUS_HEADER.lower(), ORIGINAL_RCPT_HEADER.lower()})


@dataclass(frozen=True, slots=True)
class Group:
    """Recipients queued together: `envelope` is where the copy goes (the recipients
    themselves, or a spam box); `originals` are the recipients it stands for."""

    disposition: Disposition
    originals: tuple[str, ...]

    @property
    def envelope(self) -> tuple[str, ...]:
        if self.disposition.redirect_to:
            return (self.disposition.redirect_to,)
        return self.originals


def group(rcpts: Sequence[str], dispositions: Mapping[str, Disposition]) -> list[Group]:
    """Recipients with equal dispositions together, in the order of first appearance;
    dropped recipients are left out; a recipient nobody decided for is kept as is."""
    order: dict[Disposition, list[str]] = {}
    for rcpt in rcpts:
        d = dispositions.get(rcpt, KEEP)
        if not d.drop:
            order.setdefault(d, []).append(rcpt)
    return [Group(d, tuple(members)) for d, members in order.items()]


def group_headers(g: Group) -> list[str]:
    """The disposition's headers plus, for a spam box, the recipients it stands for."""
    lines = list(g.disposition.headers)
    if g.disposition.redirect_to:
        lines.append(header_line(ORIGINAL_RCPT_HEADER, ", ".join(g.originals)))
    return lines


def drops(name: str, g: Group) -> bool:
    """Headers removed from the copy of group `g`: ours always, X-Spam-* when we add
    our own spam status."""
    if name in OUR_HEADERS:
        return True
    return g.disposition.strip_spam_headers and name.startswith(SPAM_HEADER_PREFIX)
