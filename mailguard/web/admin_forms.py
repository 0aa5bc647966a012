"""What the admin pages accept, as pure functions (tested with tables in
tests/unit/test_web_admin_forms.py): a domain's defaults, an account address inside a
domain, a password, an override, a duration. A refused value raises forms.FormError
whose text says what to enter instead; accepted text is kept verbatim (reasons may hold
quotes, semicolons, anything but control characters)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mailguard.cli.override import parse_duration
from mailguard.store.accounts import MIN_PASSWORD
from mailguard.store.overrides import OverrideAction, canonical_network
from mailguard.store.prefs_records import MAX_ADDRESS, valid_address, valid_domain
from mailguard.web import forms
from mailguard.web.forms import FormError

MAX_PASSWORD = 1024
MAX_REASON = 200
MAX_SEARCH = 100
# what a domain's spam may become, in words (settings.scan.SPAM_ACTIONS)
DOMAIN_ACTIONS = (("tag", "tag the subject"),
                  ("user-box", "tag and move to each user's spam box"),
                  ("domain-box", "move to the domain's spam box"),
                  ("central-box", "move to the server's spam box"),
                  ("release", "deliver with a spam header only"),
                  ("quarantine", "keep in quarantine"),
                  ("delete", "delete"))


@dataclass(frozen=True, slots=True)
class DomainDefaults:
    """A domain's defaults as its admin sets them."""

    enabled: bool
    action: str  # "" = the server's [spam] default_action
    score: float | None  # None: the server's threshold
    users_may_override: bool


def domain_actions(quarantine: bool, default: str) -> list[tuple[str, str]]:
    """The actions offered ("" = the server's default, named); quarantine only where the
    server keeps one."""
    words = dict(DOMAIN_ACTIONS)
    offered = [(k, v) for k, v in DOMAIN_ACTIONS if quarantine or k != "quarantine"]
    return [("", f"the server's default ({words.get(default, default)})"), *offered]


def parse_domain_defaults(form: Mapping[str, str], *, quarantine: bool) -> DomainDefaults:
    filtering = form.get("filtering", "")
    if filtering not in ("on", "off"):
        raise FormError("choose on or off for spam filtering")
    action = form.get("action", "")
    if action not in {k for k, _ in domain_actions(quarantine, "")}:
        raise FormError("choose one of the offered actions for spam")
    override = form.get("users_may_override", "")
    if override not in ("yes", "no"):
        raise FormError("choose whether users may change these for themselves")
    # the score is read exactly as on the users' page
    score = forms.parse_settings({"sensitivity": form.get("sensitivity", ""),
                                  "custom_score": form.get("custom_score", "")}).score
    return DomainDefaults(filtering == "on", action, score, override == "yes")


def domain_name(text: str) -> str:
    name = text.strip().lower().rstrip(".")
    if not valid_domain(name):
        raise FormError(f"{text.strip()[:100]!r} is not a domain name")
    return name


def address(text: str, domain: str = "", *, existing: bool = False) -> str:
    """An account's address, lower-case; inside `domain` when given, where a bare local
    part is completed with it. An `existing` account is only looked up, so any name it
    was given (by the CLI, by another backend) can still be disabled or deleted."""
    value = text.strip().lower()
    if domain and "@" not in value:
        value = f"{value}@{domain}"
    if existing and value and len(value) <= MAX_ADDRESS:
        if domain and value.rpartition("@")[2] != domain:
            raise FormError(f"{text.strip()[:100]!r} is not an address of {domain}")
        return value
    if not valid_address(value):
        raise FormError(f"{text.strip()[:100]!r} is not an e-mail address")
    if domain and value.rpartition("@")[2] != domain:
        raise FormError(f"{text.strip()[:100]!r} is not an address of {domain}")
    return value


def password(text: str) -> str:
    if len(text) < MIN_PASSWORD:
        raise FormError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(text) > MAX_PASSWORD or any(ord(c) < 0x20 for c in text):
        raise FormError("that password cannot be used (too long, or control characters)")
    return text


def reason(text: str) -> str:
    value = text.strip()
    if len(value) > MAX_REASON or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise FormError(f"a reason is one line of at most {MAX_REASON} characters")
    return value


@dataclass(frozen=True, slots=True)
class OverrideForm:
    network: str
    action: OverrideAction
    reason: str
    expires_s: int | None


def parse_override(form: Mapping[str, str]) -> OverrideForm:
    try:
        network = canonical_network(form.get("network", ""))
    except ValueError as exc:
        raise FormError(str(exc)) from None
    action = form.get("action", "")
    if action not in ("allow", "deny"):
        raise FormError("choose allow or deny")
    return OverrideForm(network, "allow" if action == "allow" else "deny",
                        reason(form.get("reason", "")), duration(form.get("expires", "")))


def duration(text: str) -> int | None:
    """`30d`, `12h`, `15m`, `3600s` (as the CLI takes them); "" = None (never)."""
    if not text.strip():
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise FormError(str(exc)) from None


def search(text: str) -> str:
    """A search prefix: lower-case, at most MAX_SEARCH characters, taken literally."""
    return text.strip().lower()[:MAX_SEARCH]
