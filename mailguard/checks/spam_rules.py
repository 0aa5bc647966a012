"""Pure spam decisions of the QUEUE stage: each recipient's effective spam settings and
what spamd's answer means for that recipient (a Disposition). Tested with tables
(tests/unit/test_scanning_rules.py)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mailguard.headers import header_line, multiline_header
from mailguard.scanners.spamd import SpamResult
from mailguard.settings.scan import SPAM_ACTIONS, SpamConfig
from mailguard.store.prefs_records import DomainPrefs, UserPrefs
from mailguard.verdict import KEEP, Disposition


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
    configured to "tag" (delivered, never lost). A domain whose users may not override
    its settings decides filtering on/off and the action whatever the user chose."""
    enabled = False
    if domain is not None:
        enabled = domain.spam_enabled
        if not domain.users_may_override and user is not None:
            user = UserPrefs(user.address, None, None, user.spam_box, user.language)
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


def treat(scan: Scan, result: SpamResult | None, eff: Effective, cfg: SpamConfig) -> Disposition:
    """The disposition for one recipient (see docs/scanning.md for the table)."""
    if scan is Scan.OFF:
        return KEEP
    if scan is Scan.TOO_LARGE:
        return Disposition((header_line("X-Spam-Status", "unscanned (size)"),), True)
    if scan is Scan.ERROR or result is None:
        return Disposition((header_line("X-Spam-Status", "unscanned"),), True)
    headers = spam_headers(result, cfg)
    if not result.spam:
        return Disposition(headers, True)
    if eff.action == "delete":
        return Disposition(drop=True, label="delete")
    if eff.action == "tag":
        return Disposition(headers, True, subject_prefix=cfg.subject_prefix, label="tag")
    if eff.action == "release":
        return Disposition(headers, True, label="release")
    if eff.action == "quarantine":
        return Disposition(headers, True, quarantine=True, label="quarantine",
                           score=result.score, detail=",".join(result.symbols))
    return Disposition(headers, True, redirect_to=eff.box, label=eff.action)
