"""What the admin pages accept (web/admin_forms.py), with tables; and who may act on
whose account (Roles.covers)."""

from __future__ import annotations

import pytest

from mailguard.store.roles import Roles
from mailguard.web import admin_forms
from mailguard.web.admin_forms import DomainDefaults, OverrideForm
from mailguard.web.forms import FormError

ON = {"filtering": "on", "action": "", "users_may_override": "yes"}


@pytest.mark.parametrize(("form", "quarantine", "want"), [
    (ON, False, DomainDefaults(True, "", None, True)),
    ({**ON, "filtering": "off", "action": "domain-box", "users_may_override": "no",
      "sensitivity": "strict"}, False, DomainDefaults(False, "domain-box", 3.0, False)),
    ({**ON, "sensitivity": "custom", "custom_score": "4,5"}, False,
     DomainDefaults(True, "", 4.5, True)),
    ({**ON, "action": "quarantine"}, True, DomainDefaults(True, "quarantine", None, True)),
    ({**ON, "action": "quarantine"}, False, "offered actions"),  # no quarantine here
    ({**ON, "filtering": ""}, False, "on or off"),
    ({**ON, "users_may_override": "maybe"}, False, "change these for themselves"),
    ({**ON, "sensitivity": "custom", "custom_score": "-1"}, False, "above 0"),
    ({**ON, "action": "'; DROP TABLE mail_domain; --"}, False, "offered actions"),
])
def test_domain_defaults(form: dict[str, str], quarantine: bool,
                         want: DomainDefaults | str) -> None:
    if isinstance(want, str):
        with pytest.raises(FormError, match=want):
            admin_forms.parse_domain_defaults(form, quarantine=quarantine)
    else:
        assert admin_forms.parse_domain_defaults(form, quarantine=quarantine) == want


@pytest.mark.parametrize(("text", "domain", "existing", "want"), [
    ("Joe", "example.com", False, "joe@example.com"),
    (" Joe@Example.COM ", "example.com", False, "joe@example.com"),
    ("o'brien+%_@example.com", "example.com", False, "o'brien+%_@example.com"),
    ("joe@other.test", "example.com", False, "not an address of example.com"),
    ("joe@sub.example.com", "example.com", False, "not an address of example.com"),
    ("joe@other.test@example.com", "example.com", False, "not an e-mail address"),
    ("<script>@example.com", "example.com", False, "not an e-mail address"),
    ("joe doe@example.com", "", False, "not an e-mail address"),
    ("joe@bad_domain", "", False, "not an e-mail address"),
    ("", "", False, "not an e-mail address"),
    # an account that exists under any name is only looked up, inside the domain
    ("<script>@example.com", "example.com", True, "<script>@example.com"),
    ("<script>@other.test", "example.com", True, "not an address of example.com"),
    ("x" * 400, "", True, "not an e-mail address"),
])
def test_address(text: str, domain: str, existing: bool, want: str) -> None:
    if "not an" in want:
        with pytest.raises(FormError, match=want):
            admin_forms.address(text, domain, existing=existing)
    else:
        assert admin_forms.address(text, domain, existing=existing) == want


@pytest.mark.parametrize(("form", "want"), [
    ({"network": "192.0.2.7", "action": "allow", "reason": "partner's relay"},
     OverrideForm("192.0.2.7/32", "allow", "partner's relay", None)),
    ({"network": "2001:db8::/48", "action": "deny", "reason": "x'); --", "expires": "2d"},
     OverrideForm("2001:db8::/48", "deny", "x'); --", 172800)),
    ({"network": "192.0.2.5/24", "action": "deny"}, "did you mean 192.0.2.0/24"),
    ({"network": "192.0.2.0/24", "action": "maybe"}, "allow or deny"),
    ({"network": "192.0.2.0/24", "action": "deny", "expires": "soon"}, "not a duration"),
    ({"network": "192.0.2.0/24", "action": "deny", "reason": "two\nlines"}, "one line"),
    ({"network": "192.0.2.0/24", "action": "deny", "reason": "x" * 201}, "one line"),
])
def test_override(form: dict[str, str], want: OverrideForm | str) -> None:
    if isinstance(want, str):
        with pytest.raises(FormError, match=want):
            admin_forms.parse_override(form)
    else:
        assert admin_forms.parse_override(form) == want


@pytest.mark.parametrize(("text", "ok"), [
    ("correct horse", True), ("1234567", False), ("x" * 1025, False), ("tab\there", False),
])
def test_password(text: str, ok: bool) -> None:
    if ok:
        assert admin_forms.password(text) == text
    else:
        with pytest.raises(FormError):
            admin_forms.password(text)


@pytest.mark.parametrize(("text", "want"), [
    ("Example.COM.", "example.com"), ("<script>", None), ("a..b", None), ("", None),
])
def test_domain_name(text: str, want: str | None) -> None:
    if want is None:
        with pytest.raises(FormError):
            admin_forms.domain_name(text)
    else:
        assert admin_forms.domain_name(text) == want


SERVER = Roles(True, frozenset())
A = Roles(False, frozenset({"a.test"}))
AB = Roles(False, frozenset({"a.test", "b.test"}))
PLAIN = Roles(False, frozenset())


@pytest.mark.parametrize(("actor", "target", "ok"), [
    (SERVER, SERVER, True), (SERVER, AB, True), (A, PLAIN, True), (A, A, True),
    (AB, A, True), (A, AB, False), (A, SERVER, False), (AB, SERVER, False),
])
def test_who_may_act_on_whom(actor: Roles, target: Roles, ok: bool) -> None:
    assert actor.covers(target) is ok
