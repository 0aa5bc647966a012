"""What the settings page offers and how its form becomes preferences: pure functions,
tested with tables (tests/unit/test_web_forms.py). Words with numbers, as people think
of spam filtering: "strict (3.0)" rather than "required_score 3"."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

SCORE_PREF = "required_score"  # SpamAssassin's threshold, a userpref row
LIST_KINDS = {"whitelist_from": "Always accept mail from",
              "blacklist_from": "Always treat as spam mail from"}
SENSITIVITY = {"strict": 3.0, "normal": 5.0, "relaxed": 8.0}
FILTERING = (("", "as my domain is set"), ("on", "on"), ("off", "off"))
ACTIONS = (("", "as my domain is set"), ("tag", "tag the subject"),
           ("user-box", "tag and move to my spam box"),
           ("release", "deliver with a spam header only"),
           ("delete", "delete"))
QUARANTINE_ACTION = ("quarantine", "keep in my quarantine")
LANGUAGES = (("", "as my domain is set"), ("en", "English"), ("de", "Deutsch"),
             ("fr", "Français"), ("es", "Español"))
MAX_SCORE = 1000.0
# an address, or "*@domain": what SpamAssassin's whitelist_from/blacklist_from match
_ENTRY = re.compile(r"^(\*|[A-Za-z0-9.!#$%&'+/=?^_`{|}~-]{1,64})@"
                    r"(\*\.)?[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$")


class FormError(ValueError):
    """A form value the page refuses; the text says what to enter instead."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The user's own choices ("" = the domain's / the server's)."""

    filtering: str  # "", "on", "off"
    score: float | None  # None: the server's threshold
    action: str
    language: str


def with_domain(choices: tuple[tuple[str, str], ...],
                domain_value: str) -> list[tuple[str, str]]:
    """The choices with what "as my domain is set" means now, in words."""
    words = dict(choices)
    shown = words.get(domain_value, domain_value)
    return [(k, f"{v} (now: {shown})" if k == "" else v) for k, v in choices]


def sensitivity_choices(default_score: float) -> list[tuple[str, str]]:
    return [("", f"as the server is set ({default_score:.1f})"),
            *((k, f"{k} ({v:.1f})") for k, v in SENSITIVITY.items()),
            ("custom", "custom")]


def sensitivity_of(score: float | None) -> tuple[str, str]:
    """(choice, custom field) for a stored threshold."""
    if score is None:
        return "", ""
    for name, value in SENSITIVITY.items():
        if value == score:
            return name, ""
    return "custom", f"{score:g}"


def actions(quarantine: bool) -> tuple[tuple[str, str], ...]:
    """The actions offered: "quarantine" only where the server keeps one."""
    if not quarantine:
        return ACTIONS
    return (*ACTIONS[:-1], QUARANTINE_ACTION, ACTIONS[-1])


def parse_settings(form: Mapping[str, str], *, quarantine: bool = False) -> Settings:
    filtering = form.get("filtering", "")
    action = form.get("action", "")
    language = form.get("language", "")
    if filtering not in dict(FILTERING):
        raise FormError("choose on, off or as my domain is set for spam filtering")
    if action not in dict(actions(quarantine)):
        raise FormError("choose one of the offered actions for spam")
    if language not in dict(LANGUAGES):
        raise FormError("choose one of the offered languages")
    choice = form.get("sensitivity", "")
    score: float | None
    if choice == "":
        score = None
    elif choice in SENSITIVITY:
        score = SENSITIVITY[choice]
    elif choice == "custom":
        text = form.get("custom_score", "").strip().replace(",", ".")
        try:
            score = float(text)
        except ValueError:
            raise FormError("a custom sensitivity needs a number, e.g. 4.5") from None
        if not 0 < score <= MAX_SCORE:
            raise FormError(f"a custom score must be above 0 and at most {MAX_SCORE:g}")
    else:
        raise FormError("choose one of the offered sensitivities")
    return Settings(filtering, score, action, language)


def list_entry(kind: str, entry: str) -> tuple[str, str]:
    """(preference, value) for an allow/block list entry; FormError if not valid."""
    if kind not in LIST_KINDS:
        raise FormError("unknown list")
    value = entry.strip().lower()
    if not _ENTRY.fullmatch(value):
        raise FormError(f"{entry.strip()[:100]!r} is not an address or *@domain")
    return kind, value
