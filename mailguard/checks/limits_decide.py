"""Pure decisions of the per-user limits: who the user is, where the counters stand
against the windows' soft and hard limits, how long to delay, which reply to give.
No I/O: `checks/limits.py` feeds these with the store's counters."""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from mailguard.context import Session
from mailguard.settings.limits import WindowLimit, describe_period
from mailguard.store.user_records import WindowCount
from mailguard.verdict import Reply

Kind = Literal["messages", "rcpts"]
SUBJECT_MAX = 200  # characters of a Subject kept per event
NAME_MAX = 200  # characters of a user name shown in a reply


class Level(IntEnum):
    OK = 0
    SOFT = 1  # past a soft limit: delay
    HARD = 2  # past a hard limit: 451 until the window frees


def identity(session: Session, mail_from: str, apply_to: str) -> str | None:
    """The sending identity: the SMTP AUTH name, else the envelope sender of a relay
    client (lower-cased), else the client IP. None when the limits do not apply
    (apply_to = "relay" and the client may not relay)."""
    if session.auth_user:
        return session.auth_user
    if session.relay_client:
        # A null sender (bounces from an internal server) has no user: count the IP.
        return mail_from.lower() if mail_from else str(session.client_ip)
    return str(session.client_ip) if apply_to == "all" else None


def clean(text: str, limit: int = NAME_MAX) -> str:
    """Printable text for a reply or header: control characters (CR, LF, NUL…) become
    "?", runs of blanks one space, and it is cut at `limit` characters."""
    out = "".join(c if c.isprintable() else "?" for c in text.replace("\t", " "))
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 3] + "..."


def level_of(count: int, soft: int, hard: int) -> Level:
    """`count` includes the message/recipient being decided: soft = 40 lets 40 through
    freely and delays the 41st; hard = 200 refuses the 201st. 0 = no limit."""
    if hard and count > hard:
        return Level.HARD
    if soft and count > soft:
        return Level.SOFT
    return Level.OK


def delay_for(count: int, soft: int, hard: int, delay_min_s: float,
              delay_max_s: float) -> float:
    """The delay past a soft limit: delay_min_s for the first one over, growing linearly
    to delay_max_s at the hard limit (or after another `soft` when there is no hard
    limit), capped there. 0 below the soft limit."""
    if not soft or count <= soft:
        return 0.0
    excess = count - soft  # 1 for the first one over
    span = (hard - soft) if hard else soft
    fraction = min(1.0, (excess - 1) / max(1, span - 1))
    return round(delay_min_s + (delay_max_s - delay_min_s) * fraction, 1)


@dataclass(frozen=True, slots=True)
class Assessment:
    """The worst window: its level, and the delay to apply (0 unless SOFT)."""

    level: Level
    delay_s: float = 0.0
    period_s: int = 0
    kind: Kind = "messages"
    count: int = 0
    limit: int = 0

    def describe(self) -> str:
        if self.level is Level.OK:
            return "within limits"
        name = "hard" if self.level is Level.HARD else "soft"
        return (f"{self.kind} {self.count} > {name} {self.limit} "
                f"in {self.period_s}s" + (f", delayed {self.delay_s:g}s" if self.delay_s else ""))


OK = Assessment(Level.OK)


def assess(counts: Sequence[WindowCount], windows: Sequence[WindowLimit], *, messages: int,
           rcpts: int, delay_kind: Kind, delay_min_s: float, delay_max_s: float) -> Assessment:
    """Compare the projected counts (stored counts plus `messages`/`rcpts` being decided)
    with every window. Any hard limit passed wins (the first such window is named);
    otherwise the longest delay of the `delay_kind` soft limits passed."""
    by_period = {c.period_s: c for c in counts}
    worst = OK
    for w in windows:
        c = by_period.get(w.period_s, WindowCount(w.period_s))
        checks: tuple[tuple[Kind, int, int, int], ...] = (
            ("messages", c.messages + messages, w.soft_messages, w.hard_messages),
            ("rcpts", c.rcpts + rcpts, w.soft_rcpts, w.hard_rcpts),
        )
        for kind, count, soft, hard in checks:
            level = level_of(count, soft, hard)
            if level is Level.HARD:
                return Assessment(Level.HARD, 0.0, w.period_s, kind, count, hard)
            if level is Level.SOFT and kind == delay_kind:
                delay = delay_for(count, soft, hard, delay_min_s, delay_max_s)
                if worst.level is Level.OK or delay > worst.delay_s:
                    worst = Assessment(Level.SOFT, delay, w.period_s, kind, count, soft)
    return worst


# --- replies (RFC 3463 4.7.1: delivery not authorized, temporary) --------------------------

def hard_reply(user: str, period_s: int) -> Reply:
    return Reply(451, f"too much mail from {clean(user)} in the last "
                 f"{describe_period(period_s)}, try again later", "4.7.1")


def suspended_reply(user: str, contact: str) -> Reply:
    return Reply(451, f"account {clean(user)} is suspended for sending too much mail; "
                 f"contact {clean(contact)}", "4.7.1")


PANIC_REPLY = Reply(451, "relaying is stopped on this server for now, try again later", "4.7.1")


# --- what an accepted message contributes -------------------------------------------------

def rcpt_domains(rcpts: Iterable[str]) -> list[str]:
    """The distinct recipient domains, lower-cased, in first-seen order."""
    seen: dict[str, None] = {}
    for r in rcpts:
        _, at, domain = r.rpartition("@")
        seen.setdefault(domain.lower() if at else "", None)
    return [d for d in seen if d]


def subject_of(message: bytes) -> str:
    """The decoded Subject of a message (LF line ends), sanitised and truncated; "" when
    there is none or the header cannot be parsed."""
    head = message.split(b"\n\n", 1)[0]
    try:
        parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head)
        value = parsed.get("subject")
        text = str(value) if value is not None else ""
    except Exception:  # a hostile header must not cost the message; the subject is a hint
        return ""
    return clean(text, SUBJECT_MAX)
