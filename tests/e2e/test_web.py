"""`mailguard web` as a mail user meets it: the real server process on the real store,
driven over HTTP: log in (throttled, sessions rotated, CSRF on every form), set spam
filtering, sensitivity, action and allow/block lists, and find them where spamd and the
QUEUE stage read them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailguard.store.prefs import PrefsStore
from mailguard.store.repo import Store
from tests.e2e.daemon_harness import run_cli
from tests.e2e.web_harness import PASSWORD, Web, csrf, login


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    w = Web(tmp_path)
    yield w
    w.stop()


def prefs_of(store: str, user: str) -> tuple[object, dict[str, list[str]]]:
    async def read() -> tuple[object, dict[str, list[str]]]:
        s = await Store.open(store)
        try:
            p = PrefsStore(s.db)
            rows: dict[str, list[str]] = {}
            for r in await p.prefs(user):
                rows.setdefault(r.preference, []).append(r.value)
            return await p.user(user), rows
        finally:
            await s.close()
    return asyncio.run(read())


def test_login_settings_lists_and_logout(web: Web) -> None:
    with web.client() as c:
        assert c.get("/").headers["location"] == "/login"
        wrong = login(c, password="nope")
        assert wrong.status_code == 401 and "Wrong address or password." in wrong.text
        ok = login(c)
        assert (ok.status_code, ok.headers["location"]) == (303, "/")
        cookie = ok.headers["set-cookie"]
        assert "mg_session=" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie and "Secure" not in cookie  # cookie_secure off
        page = c.get("/")
        assert page.status_code == 200 and "Spam settings for joe@example.com" in page.text
        assert page.headers["x-frame-options"] == "DENY"
        token = csrf(page.text)
        # no token, or another one: refused, nothing written
        form = {"filtering": "on", "sensitivity": "strict", "action": "user-box",
                "language": "de", "custom_score": ""}
        assert c.post("/settings", data=form).status_code == 403
        assert c.post("/settings", data={**form, "csrf": "forged"}).status_code == 403
        saved = c.post("/settings", data={**form, "csrf": token,
                                          "address": "ann@example.com"})  # ignored
        assert (saved.status_code, saved.headers["location"]) == (303, "/?saved=1")
        assert "It applies to the next message you receive." in c.get("/?saved=1").text
        user, rows = prefs_of(web.store, "joe@example.com")
        assert (user.spam_enabled, user.spam_action, user.language) == (  # type: ignore[attr-defined]
            True, "user-box", "de")
        assert rows == {"required_score": ["3"]}
        assert prefs_of(web.store, "ann@example.com")[1] == {}  # not someone else's
        # custom sensitivity, then the lists
        c.post("/settings", data={**form, "csrf": token, "sensitivity": "custom",
                                  "custom_score": "4,5"})
        assert prefs_of(web.store, "joe@example.com")[1] == {"required_score": ["4.5"]}
        assert 'value="4.5"' in c.get("/").text
        for entry in ("Boss@Partner.Example", "*@lists.example.org"):
            c.post("/lists/add", data={"csrf": token, "kind": "whitelist_from",
                                       "entry": entry})
        c.post("/lists/add", data={"csrf": token, "kind": "blacklist_from",
                                   "entry": "*@spam.example"})
        bad = c.post("/lists/add", data={"csrf": token, "kind": "whitelist_from",
                                         "entry": "<script>alert(1)</script>"})
        assert bad.status_code == 400 and "<script>alert" not in bad.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in bad.text
        c.post("/lists/remove", data={"csrf": token, "kind": "whitelist_from",
                                      "entry": "*@lists.example.org"})
        assert prefs_of(web.store, "joe@example.com")[1] == {
            "blacklist_from": ["*@spam.example"], "required_score": ["4.5"],
            "whitelist_from": ["boss@partner.example"]}
        # logout ends the session on the server: the old cookie is worthless
        old = c.cookies.get("mg_session")
        assert c.post("/logout", data={"csrf": token}).headers["location"] == "/login"
    with web.client() as again:
        again.cookies.set("mg_session", old or "")
        assert again.get("/").status_code == 303


def session_token(r: httpx.Response) -> str:
    m = re.search(r"mg_session=([^;]+)", r.headers.get("set-cookie", ""))
    assert m, r.headers
    return m.group(1)


def test_sessions_rotate_and_fixed_ones_are_refused(web: Web) -> None:
    with web.client() as attacker:
        attacker.cookies.set("mg_session", "chosen-by-the-attacker")
        assert attacker.get("/").headers["location"] == "/login"
        first = session_token(login(attacker))
    assert first != "chosen-by-the-attacker"
    with web.client() as c:
        second = session_token(login(c))
    assert second != first


def test_logins_throttled_per_account_counted_before_checking(web: Web) -> None:
    with web.client() as c:
        for _ in range(3):
            assert login(c, password="wrong password").status_code == 401
        throttled = login(c)  # the right password, but the account is locked for now
        assert throttled.status_code == 429
        assert "Too many failed logins. Try again in 15 minutes." in throttled.text
    with web.client() as other:  # another account from the same IP is not locked
        assert login(other, "ann@example.com").status_code == 303
    log = web.stop()
    assert "event=web_login result=throttled user='joe@example.com'" in log


def test_secure_cookie_by_default(tmp_path: Path) -> None:
    w = Web(tmp_path, secure=True)
    try:
        with w.client() as c:
            cookie = login(c).headers["set-cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie
    finally:
        w.stop()


def test_login_form_needs_its_token(web: Web) -> None:
    with web.client() as c:
        r = c.post("/login", data={"csrf": "x", "address": "joe@example.com",
                                   "password": PASSWORD})
        assert r.status_code == 403 and "mg_session" not in r.headers.get("set-cookie", "")
    assert run_cli("web", "--listen", "nonsense:port:x").returncode == 2
