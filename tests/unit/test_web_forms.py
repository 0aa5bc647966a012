"""The settings form's pure rules: sensitivity words and numbers, choices, list entries."""

from __future__ import annotations

import pytest

from mailguard.web.forms import (
    ACTIONS,
    FILTERING,
    FormError,
    Settings,
    list_entry,
    parse_settings,
    sensitivity_of,
    with_domain,
)

BASE = {"filtering": "", "sensitivity": "", "action": "", "language": "", "custom_score": ""}


@pytest.mark.parametrize(("changes", "want"), [
    ({}, Settings("", None, "", "")),
    ({"filtering": "on", "sensitivity": "strict", "action": "user-box", "language": "fr"},
     Settings("on", 3.0, "user-box", "fr")),
    ({"sensitivity": "relaxed", "action": "delete"}, Settings("", 8.0, "delete", "")),
    ({"sensitivity": "custom", "custom_score": " 4,5 "}, Settings("", 4.5, "", "")),
    ({"filtering": "off", "sensitivity": "normal"}, Settings("off", 5.0, "", "")),
])
def test_parse_settings(changes: dict[str, str], want: Settings) -> None:
    assert parse_settings({**BASE, **changes}) == want


@pytest.mark.parametrize(("changes", "message"), [
    ({"filtering": "maybe"}, "spam filtering"),
    ({"action": "central-box"}, "offered actions"),  # an admin's choice, not a user's
    ({"language": "xx"}, "offered languages"),
    ({"sensitivity": "paranoid"}, "offered sensitivities"),
    ({"sensitivity": "custom", "custom_score": "high"}, "needs a number"),
    ({"sensitivity": "custom", "custom_score": "0"}, "above 0"),
    ({"sensitivity": "custom", "custom_score": "1e9"}, "at most 1000"),
])
def test_parse_settings_refuses(changes: dict[str, str], message: str) -> None:
    with pytest.raises(FormError, match=message):
        parse_settings({**BASE, **changes})


def test_sensitivity_of() -> None:
    assert sensitivity_of(None) == ("", "")
    assert sensitivity_of(3.0) == ("strict", "")
    assert sensitivity_of(6.5) == ("custom", "6.5")


@pytest.mark.parametrize(("entry", "want"), [
    ("Boss@Partner.Example", "boss@partner.example"),
    ("*@lists.example.org", "*@lists.example.org"),
    ("*@*.example.org", "*@*.example.org"),
    ("o'brien+news@example.ie", "o'brien+news@example.ie"),
])
def test_list_entries(entry: str, want: str) -> None:
    assert list_entry("whitelist_from", entry) == ("whitelist_from", want)


@pytest.mark.parametrize("entry", ["", "example.com", "@example.com", "a@b", "a b@example.com",
                                   "<script>@x.example", "*@", "a@example.com\nx",
                                   "a@exa_mple.com", "a@@example.com"])
def test_bad_list_entries(entry: str) -> None:
    with pytest.raises(FormError):
        list_entry("blacklist_from", entry)
    with pytest.raises(FormError, match="unknown list"):
        list_entry("required_score", "a@example.com")


def test_domain_choice_says_what_it_means() -> None:
    assert with_domain(FILTERING, "off")[0] == ("", "as my domain is set (now: off)")
    assert with_domain(ACTIONS, "user-box")[0] == (
        "", "as my domain is set (now: tag and move to my spam box)")
    assert with_domain(ACTIONS, "central-box")[0] == ("", "as my domain is set (now: central-box)")
    assert with_domain(ACTIONS, "tag")[1:] == list(ACTIONS[1:])
