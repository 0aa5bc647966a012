"""Pure decisions of the QUEUE stage: each recipient's effective spam settings, what the
scan result means for that recipient (a Treatment), and the grouping of recipients that
share a treatment, so that each group is queued once with its own message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from mailguard.scanners.spamd import SpamResult
from mailguard.scanning.headers import header_line, multiline_header
from mailguard.settings.scan import SPAM_ACTIONS, SpamConfig
from mailguard.store.prefs_records import DomainPrefs, UserPrefs

SPAM_HEADER_PREFIX = "x-spam-"  # incoming X-Spam-* are never trusted: dropped before ours
VIRUS_HEADER = "X-MailGuard-Virus-Scan"
ORIGINAL_RCPT_HEADER = "X-MailGuard-Original-Recipient"
OUR_HEADERS = frozenset({VIRUS_HEADER.lower(), ORIGINAL_RCPT_HEADER.lower()})


@dataclass(frozen=True, slots=True)
class Effective:
    """A recipient's settings after user row → domain row → configuration."""

    enabled: bool
    action: str  # one of SPAM_ACTIONS
    box: str  # where spam goes for the *-box actions ("" otherwise)
    language: str  # "" = the notifier's default


def _box_for(address: str, action: str, user: UserPrefs | None, domain: DomainPrefs | None,
             cfg: SpamConfig) -> str:
    local, _, dom = address.rpartition("@")
    if action == "user-box":
        own = user.spam_box if user is not None else None
        return own or f"{local}-{cfg.user_box_extension}@{dom}"
    if action == "domain-box":
        own_d = domain.spam_box if domain is not None else ""
        return own_d or f"{cfg.domain_box_localpart}@{dom}"
    if action == "central-box":
        return cfg.central_box
    return ""


def effective(address: str, user: UserPrefs | None, domain: DomainPrefs | None,
              cfg: SpamConfig) -> Effective:
    """Filtering is off unless the user or the domain turned it on; an unknown or
    unusable action falls back to the configured default, a central box that is not
    configured to "tag" (delivered, never lost)."""
    enabled = False
    if domain is not None:
        enabled = domain.spam_enabled
    if user is not None and user.spam_enabled is not None:
        enabled = user.spam_enabled
    action = (user.spam_action if user is not None else None) or (
        domain.spam_action if domain is not None else "") or cfg.default_action
    if action not in SPAM_ACTIONS:
        action = cfg.default_action
    if action == "central-box" and not cfg.central_box:
        action = "tag"
    language = (user.language if user is not None else None) or (
        domain.language if domain is not None else "")
    return Effective(enabled, action, _box_for(address, action, user, domain, cfg), language)


class Scan(StrEnum):
    """The spam scan outcome for one recipient."""

    OFF = "off"  # filtering not enabled: not scanned, left untouched
    SPAM = "spam"
    HAM = "ham"
    TOO_LARGE = "too_large"  # over [spamd] max_size_bytes: not scanned
    ERROR = "error"  # spamd failed and on_error = "pass"


@dataclass(frozen=True, slots=True)
class Treatment:
    """What to do with the message for one recipient; equal treatments share a group."""

    headers: tuple[str, ...] = ()  # complete header lines to put on top
    strip_spam_headers: bool = False
    subject_prefix: str = ""
    redirect_to: str = ""  # a spam box: deliver there instead of to the recipient
    drop: bool = False  # action "delete"


def spam_headers(result: SpamResult, cfg: SpamConfig) -> tuple[str, ...]:
    flag = "YES" if result.spam else "NO"
    status = f"{'Yes' if result.spam else 'No'}, score={result.score:.1f} " \
             f"required={result.threshold:.1f} tests={','.join(result.symbols) or 'none'}"
    lines = [header_line("X-Spam-Flag", flag), header_line("X-Spam-Score", f"{result.score:.1f}"),
             header_line("X-Spam-Status", status)]
    if cfg.report_header and result.spam and result.report:
        lines.append(multiline_header("X-Spam-Report", _report_details(result.report)))
    return tuple(lines)


def _report_details(report: str) -> list[str]:
    """The rule table of spamd's report; its preamble quotes the message ("Content
    preview"), which has no place in a header."""
    text = report.partition("Content analysis details:")
    return (text[1] + text[2]).splitlines() if text[1] else report.splitlines()


def treat(scan: Scan, result: SpamResult | None, eff: Effective, cfg: SpamConfig) -> Treatment:
    """The disposition for one recipient (see docs/scanning.md for the table)."""
    if scan is Scan.OFF:
        return Treatment()
    if scan is Scan.TOO_LARGE:
        return Treatment((header_line("X-Spam-Status", "unscanned (size)"),), True)
    if scan is Scan.ERROR or result is None:
        return Treatment((header_line("X-Spam-Status", "unscanned"),), True)
    headers = spam_headers(result, cfg)
    if not result.spam:
        return Treatment(headers, True)
    if eff.action == "delete":
        return Treatment(drop=True)
    if eff.action == "tag":
        return Treatment(headers, True, subject_prefix=cfg.subject_prefix)
    if eff.action == "release":
        return Treatment(headers, True)
    return Treatment(headers, True, redirect_to=eff.box)


@dataclass(frozen=True, slots=True)
class Group:
    """Recipients queued together: `envelope` is where the copy goes (the recipients
    themselves, or a spam box); `originals` are the recipients it stands for."""

    treatment: Treatment
    originals: tuple[str, ...]

    @property
    def envelope(self) -> tuple[str, ...]:
        if self.treatment.redirect_to:
            return (self.treatment.redirect_to,)
        return self.originals


def group(rcpts: Sequence[str], treatments: Mapping[str, Treatment]) -> list[Group]:
    """Recipients with equal treatments together, in the order of first appearance;
    dropped recipients are left out."""
    order: dict[Treatment, list[str]] = {}
    for rcpt in rcpts:
        t = treatments[rcpt]
        if not t.drop:
            order.setdefault(t, []).append(rcpt)
    return [Group(t, tuple(members)) for t, members in order.items()]


def group_headers(g: Group) -> list[str]:
    """The treatment's headers plus, for a spam box, the recipients it stands for."""
    lines = list(g.treatment.headers)
    if g.treatment.redirect_to:
        lines.append(header_line(ORIGINAL_RCPT_HEADER, ", ".join(g.originals)))
    return lines


def drops(name: str, g: Group) -> bool:
    """Headers removed from the copy of group `g`: ours always, X-Spam-* when we add
    our own spam status."""
    if name in OUR_HEADERS:
        return True
    return g.treatment.strip_spam_headers and name.startswith(SPAM_HEADER_PREFIX)
