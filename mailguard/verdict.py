"""The one vocabulary for policy decisions: stages, replies, verdicts and check results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Stage(StrEnum):
    """Where in the SMTP transaction (or after it) a check runs."""

    CONNECT = "connect"
    HELO = "helo"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    QUEUE = "queue"


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply. `enhanced` (RFC 3463, e.g. "4.7.1") goes before the text when set;
    qmail's own replies carry theirs as "(#5.7.1)" inside the text instead."""

    code: int
    text: str
    enhanced: str = ""

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def lines(self) -> list[str]:
        """The reply as protocol lines without CRLF (multi-line text uses "code-" continuation)."""
        parts = self.text.split("\n") if self.text else [""]
        if self.enhanced:
            parts = [f"{self.enhanced} {p}" for p in parts]
        out = [f"{self.code}-{p}" for p in parts[:-1]]
        out.append(f"{self.code} {parts[-1]}".rstrip())
        return out

    def __str__(self) -> str:
        return "\r\n".join(self.lines())


class Action(StrEnum):
    """What a verdict asks the front end to do."""

    CONTINUE = "continue"  # no objection: go on with the next check
    ACCEPT = "accept"  # accept now, skip the remaining checks of this stage
    TEMPFAIL = "tempfail"  # 4xx: try again later
    REJECT = "reject"  # 5xx: do not try again


class Outcome(StrEnum):
    """How a check went, for logs, headers and metrics."""

    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a check says. `deferred` verdicts are decided early (CONNECT) and enforced at
    RCPT, so that postmaster@ and abuse@ still get through."""

    action: Action
    reply: Reply | None = None
    disconnect: bool = False
    deferred: bool = False
    reason: str = ""
    # how the run is recorded when the action alone does not say it: a scanner that
    # found spam (FAIL) or skipped an oversized message (SKIP) still lets the mail go on
    outcome: Outcome | None = None

    @property
    def stops(self) -> bool:
        """True when this verdict ends the stage (anything but CONTINUE)."""
        return self.action is not Action.CONTINUE


CONTINUE = Verdict(Action.CONTINUE)
ACCEPT = Verdict(Action.ACCEPT)


def tempfail(reply: Reply, reason: str = "", *, disconnect: bool = False) -> Verdict:
    return Verdict(Action.TEMPFAIL, reply, disconnect=disconnect, reason=reason)


def reject(reply: Reply, reason: str = "", *, disconnect: bool = False) -> Verdict:
    return Verdict(Action.REJECT, reply, disconnect=disconnect, reason=reason)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A typed record of one check run, kept on the transaction."""

    check: str
    stage: Stage
    outcome: Outcome
    action: Action
    enforced: bool
    detail: str = ""
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Disposition:
    """What the QUEUE stage does with the message for one recipient (decided by the
    QUEUE-stage checks, e.g. spamd's per-user preferences). Recipients with equal
    dispositions get one copy together; the default is "deliver unchanged"."""

    headers: tuple[str, ...] = ()  # complete header lines to put on top of this copy
    strip_spam_headers: bool = False  # drop incoming X-Spam-* (we add our own)
    subject_prefix: str = ""
    redirect_to: str = ""  # a spam box: deliver there instead of to the recipient
    drop: bool = False  # delete: accepted, never delivered
    quarantine: bool = False  # kept in mailguard's quarantine instead of delivered
    # what was decided, for logs ("tag", "user-box", "delete"...); not part of equality,
    # so it never splits recipients who get the same copy
    label: str = field(default="", compare=False)
    # the recipient's own spam score and rule names (the quarantine lists them)
    score: float | None = field(default=None, compare=False)
    detail: str = field(default="", compare=False)


KEEP = Disposition()
