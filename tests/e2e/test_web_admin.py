"""The admin pages of `mailguard web` as a domain admin and a server admin meet them: the
real server process on the real store over HTTP. Each action is read back through the
store modules (or the CLI) that the daemon and the commands use; the authorization
matrix (a mail user, the admin of another domain, the server admin) is tried by URL and
by form field; forged CSRF tokens are refused; stored values are escaped on the page and
kept verbatim, SQL metacharacters and all."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import httpx
import pytest

from mailguard.store.accounts import AccountStore
from mailguard.store.database import Database
from mailguard.store.overrides import OverrideStore
from mailguard.store.prefs import PrefsStore
from mailguard.store.repo import Store
from mailguard.store.roles import RoleStore
from mailguard.store.users import UserStore
from tests.e2e.web_harness import PASSWORD, Web, csrf, login

T = TypeVar("T")
ROOT, BOSS, OLGA = "root@example.com", "boss@example.com", "olga@other.test"
JOE, ANN, ZED = "joe@example.com", "ann@example.com", "zed@other.test"
GREYLIST = "\n[greylist]\nauto_whitelist_after = 3\n"
ADDRESS_CELL = '<td data-label="Address">({})</td>'


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    w = Web(tmp_path_factory.mktemp("webadmin"), users=(ROOT, BOSS, OLGA, JOE, ANN, ZED),
            extra_config=GREYLIST)
    try:
        for user, domain in ((ROOT, "*"), (BOSS, "example.com"), (OLGA, "other.test")):
            res = w.cli("role", "grant", user, domain)
            assert res.returncode == 0, res.stderr
        for domain in ("example.com", "other.test"):
            assert w.cli("domain", "spam", "on", domain).returncode == 0
        yield w
    finally:
        w.stop()


def on_store(web: Web, work: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        s = await Store.open(web.store)
        try:
            return await work(s.db)
        finally:
            await s.close()
    return asyncio.run(run())


Session = Callable[[str], tuple[httpx.Client, str]]


@pytest.fixture
def session(web: Web) -> Iterator[Session]:
    """Log in as a user: (client, the session's CSRF token); closed after the test."""
    clients: list[httpx.Client] = []

    def open_as(user: str) -> tuple[httpx.Client, str]:
        c = web.client()
        clients.append(c)
        r = login(c, user)
        assert r.status_code == 303, r.text
        return c, csrf(c.get("/").text)

    yield open_as
    for c in clients:
        c.close()


def test_role_command_makes_and_lists_admins(web: Web, session: Session) -> None:
    listing = web.cli("role", "list").stdout
    assert f"{ROOT}\tserver admin" in listing and f"{BOSS}\tadmin of example.com" in listing
    again = web.cli("role", "grant", "Root@Example.com", "*")
    assert again.returncode == 0 and "was already server admin" in again.stdout
    assert web.cli("role", "grant", "not an address", "*").returncode == 2
    assert web.cli("role", "grant", ANN, "bad domain!").returncode == 2
    assert web.cli("role", "revoke", ANN, "example.com").returncode == 1
    roles = on_store(web, lambda db: RoleStore(db).roles_of(ROOT))
    assert roles.server_admin and roles.administers("any.example")


def test_nav_shows_what_the_roles_allow(web: Web, session: Session) -> None:
    pages = {}
    for user in (JOE, BOSS, ROOT):
        c, _ = session(user)
        pages[user] = c.get("/").text
    assert '<a href="/domains"' not in pages[JOE] and '<a href="/admin"' not in pages[JOE]
    assert '<a href="/quarantine"' in pages[JOE]
    assert '<a href="/domains"' in pages[BOSS] and '<a href="/admin"' not in pages[BOSS]
    assert '<a href="/domains"' in pages[ROOT] and '<a href="/admin"' in pages[ROOT]


ADMIN_GETS = ["/admin", "/admin/accounts", "/admin/roles", "/admin/overrides",
              "/admin/greylist", "/admin/suspended"]
DOMAIN_GETS = ["/domains/example.com", "/domains/example.com/users"]


def test_a_mail_user_reaches_no_admin_page(web: Web, session: Session) -> None:
    c, token = session(JOE)
    for path in [*ADMIN_GETS, *DOMAIN_GETS, "/domains"]:
        assert c.get(path).status_code == 403, path
    posts = {"/admin/panic": {"state": "on"},
             "/admin/accounts/add": {"address": "evil@example.com", "password": "x" * 12},
             "/admin/roles/grant": {"user": JOE, "domain": "*"},
             "/domains/example.com/defaults": {"filtering": "off", "action": "",
                                               "users_may_override": "yes"},
             "/domains/example.com/users/disable": {"address": ANN}}
    for path, data in posts.items():
        assert c.post(path, data={**data, "csrf": token}).status_code == 403, path
    assert not on_store(web, lambda db: UserStore(db).panic())
    assert not on_store(web, lambda db: RoleStore(db).roles_of(JOE)).any_admin
    assert "event=web_admin user='joe@example.com' action=post target='/admin/panic' " \
           "result=forbidden" in web.logged()
    assert on_store(web, lambda db: AccountStore(db).get("evil@example.com")) is None
    assert not on_store(web, lambda db: AccountStore(db).get(ANN)).disabled  # type: ignore[union-attr]
    anonymous = web.client()
    with anonymous:
        assert anonymous.get("/admin").headers["location"] == "/login"


def test_a_domain_admin_stays_in_its_domain(web: Web, session: Session) -> None:
    c, token = session(BOSS)
    assert "example.com" in c.get("/domains").text
    assert "other.test" not in c.get("/domains").text
    for path in ["/domains/other.test", "/domains/OTHER.TEST/users", *ADMIN_GETS]:
        assert c.get(path).status_code == 403, path
    # by URL
    r = c.post("/domains/other.test/defaults", data={
        "csrf": token, "filtering": "off", "action": "delete", "users_may_override": "no"})
    assert r.status_code == 403
    # by form field: addresses of another domain in its own domain's forms
    base = "/domains/example.com/users"
    for what, data in (("disable", {"address": ZED}),
                       ("password", {"address": OLGA, "password": "taken over!"}),
                       ("add", {"address": "new@other.test", "password": "x" * 12}),
                       ("unsuspend", {"address": ZED})):
        r = c.post(f"{base}/{what}", data={**data, "csrf": token})
        assert r.status_code == 403, (what, r.text)
    # an account of its domain that holds more than it does: the server admin
    r = c.post(f"{base}/password", data={"csrf": token, "address": ROOT,
                                         "password": "taken over!"})
    assert r.status_code == 403
    r = c.post(f"{base}/disable", data={"csrf": token, "address": ROOT})
    assert r.status_code == 403
    other = on_store(web, lambda db: PrefsStore(db).domain("other.test"))
    assert other is not None and other.spam_enabled and other.users_may_override
    accounts = AccountStore
    assert not on_store(web, lambda db: accounts(db).get(ZED)).disabled  # type: ignore[union-attr]
    assert not on_store(web, lambda db: accounts(db).get(ROOT)).disabled  # type: ignore[union-attr]
    assert on_store(web, lambda db: accounts(db).get("new@other.test")) is None
    with web.client() as olga:  # her password is still hers
        assert login(olga, OLGA).status_code == 303
    with web.client() as root:
        assert login(root, ROOT).status_code == 303
    assert "event=web_admin user='boss@example.com' action=user_password " \
           "target='root@example.com' result=forbidden" in web.logged()


def test_forged_csrf_is_refused(web: Web, session: Session) -> None:
    c, token = session(ROOT)
    for data in ({}, {"csrf": "forged"}, {"csrf": token[:-1]}):
        assert c.post("/admin/panic", data={**data, "state": "on"}).status_code == 403
        r = c.post("/domains/example.com/users/disable", data={**data, "address": ANN})
        assert r.status_code == 403
    assert not on_store(web, lambda db: UserStore(db).panic())
    with web.client() as other:  # a token of another session is no better
        login(other, BOSS)
        r = other.post("/domains/example.com/users/disable",
                       data={"csrf": token, "address": ANN})
        assert r.status_code == 403


def test_domain_admin_sets_defaults_and_locks_them(web: Web, session: Session) -> None:
    c, token = session(BOSS)
    shown = c.get("/domains/example.com")
    assert shown.status_code == 200 and '<label for="users_may_override">' in shown.text
    bad = c.post("/domains/example.com/defaults", data={
        "csrf": token, "filtering": "on", "action": "nonsense",
        "users_may_override": "yes"})
    assert bad.status_code == 400 and "choose one of the offered actions" in bad.text
    r = c.post("/domains/example.com/defaults", data={
        "csrf": token, "filtering": "on", "action": "release", "sensitivity": "custom",
        "custom_score": "4.2", "users_may_override": "no"})
    assert (r.status_code, r.headers["location"]) == (303, "/domains/example.com?done=saved")
    dom = on_store(web, lambda db: PrefsStore(db).domain("example.com"))
    assert dom is not None and (dom.spam_enabled, dom.spam_action, dom.users_may_override) == (
        True, "release", False)
    rows = on_store(web, lambda db: PrefsStore(db).prefs("@~example.com"))
    assert [(r.preference, r.value) for r in rows] == [("required_score", "4.2")]
    # ann's own choice (delete) no longer counts: the QUEUE stage's rules say so
    on_store(web, lambda db: PrefsStore(db).set_user(ANN, 0.0, spam_enabled=False,
                                                     spam_action="delete"))
    status = web.cli("domain", "spam", "status", ANN)
    assert "spam filtering on, action release" in status.stdout, status.stdout
    # ann's page shows the domain's values and refuses changes to them
    a, atoken = session(ANN)
    mine = a.get("/").text
    assert "Your domain's administrator sets these" in mine
    assert 'id="filtering"' not in mine and "4.2" in mine
    r = a.post("/settings", data={"csrf": atoken, "filtering": "off", "language": "de"})
    assert r.status_code == 403 and "only the language is yours" in r.text
    assert a.post("/settings", data={"csrf": atoken, "sensitivity": "relaxed"}
                  ).status_code == 403
    ok = a.post("/settings", data={"csrf": atoken, "language": "de"})
    assert ok.status_code == 303
    user = on_store(web, lambda db: PrefsStore(db).user(ANN))
    assert user is not None and (user.spam_enabled, user.spam_action, user.language) == (
        False, "delete", "de")
    assert [r.value for r in on_store(web, lambda db: PrefsStore(db).prefs(ANN))
            if r.preference == "required_score"] == []
    # unlocked again: ann's own choice counts
    c.post("/domains/example.com/defaults", data={
        "csrf": token, "filtering": "on", "action": "", "sensitivity": "",
        "users_may_override": "yes"})
    assert "spam filtering off" in web.cli("domain", "spam", "status", ANN).stdout
    assert on_store(web, lambda db: PrefsStore(db).prefs("@~example.com")) == []
    assert "action=domain_defaults target='example.com' result=ok" in web.logged()


def test_domain_admin_manages_users(web: Web, session: Session) -> None:
    c, token = session(BOSS)
    base = "/domains/example.com/users"
    r = c.post(f"{base}/add", data={"csrf": token, "address": "Newbie",
                                    "password": "first password"})
    assert r.headers["location"] == f"{base}?done=added"
    assert "newbie@example.com" in c.get(base).text
    short = c.post(f"{base}/add", data={"csrf": token, "address": "short",
                                        "password": "1234"})
    assert short.status_code == 400 and "at least 8 characters" in short.text
    with web.client() as n:
        assert login(n, "newbie@example.com", "first password").status_code == 303
    c.post(f"{base}/password", data={"csrf": token, "address": "newbie@example.com",
                                     "password": "second password"})
    with web.client() as n:
        assert login(n, "newbie@example.com", "first password").status_code == 401
        assert login(n, "newbie@example.com", "second password").status_code == 303
    r = c.post(f"{base}/disable", data={"csrf": token, "address": "newbie@example.com"})
    assert r.headers["location"] == f"{base}?done=disabled"
    acc = on_store(web, lambda db: AccountStore(db).get("newbie@example.com"))
    assert acc is not None and acc.disabled
    c.post(f"{base}/enable", data={"csrf": token, "address": "newbie@example.com"})
    acc = on_store(web, lambda db: AccountStore(db).get("newbie@example.com"))
    assert acc is not None and not acc.disabled
    # an outbound-limited user: suspended by the CLI, unsuspended on the page
    assert web.cli("user", "suspend", JOE, "--reason", "too many messages").returncode == 0
    page = c.get(base).text
    assert "too many messages" in page
    r = c.post(f"{base}/unsuspend", data={"csrf": token, "address": JOE})
    assert r.headers["location"] == f"{base}?done=unsuspended"
    assert not on_store(web, lambda db: UserStore(db).status(JOE)).suspended
    assert "action=user_unsuspend target='joe@example.com' result=ok" in web.logged()


def test_the_command_line_sets_the_same_switch(web: Web, session: Session) -> None:
    res = web.cli("domain", "spam", "off", "cli.test", "--users-may-override", "no")
    assert res.returncode == 0 and res.stdout == (
        "cli.test: spam filtering off; users may not override it\n")
    dom = on_store(web, lambda db: PrefsStore(db).domain("cli.test"))
    assert dom is not None and not dom.users_may_override
    c, _ = session(ROOT)  # the page shows what the command set
    assert '<option value="no" selected>' in c.get("/domains/cli.test").text
    assert web.cli("domain", "spam", "status", "x@cli.test",
                   "--users-may-override", "yes").returncode == 2
    status = web.cli("domain", "spam", "status", "x@cli.test").stdout
    assert status == "x@cli.test: spam filtering off (from cli.test, which users may not " \
                     "override)\n"


def test_users_are_paged_and_searched_literally(web: Web, session: Session) -> None:
    async def many(db: Database) -> None:
        accounts = AccountStore(db)
        for i in range(60):
            await accounts.add(f"page{i:02d}@paged.test", None, 0.0)
        await accounts.add("p%ge_x@paged.test", None, 0.0)
    on_store(web, many)
    assert web.cli("role", "grant", OLGA, "paged.test").returncode == 0
    c, _ = session(OLGA)
    first = c.get("/domains/paged.test/users", params={"q": "page"}).text
    shown = re.findall(ADDRESS_CELL.format("page\\d\\d@paged\\.test"), first)
    assert shown == [f"page{i:02d}@paged.test" for i in range(50)]
    m = re.search(r'href="(/domains/paged\.test/users\?q=page&amp;after=[^"]+)"', first)
    assert m, first
    second = c.get(m.group(1).replace("&amp;", "&")).text
    assert re.findall(ADDRESS_CELL.format("page\\d\\d@paged\\.test"), second) == [
        f"page{i:02d}@paged.test" for i in range(50, 60)]
    literal = c.get("/domains/paged.test/users", params={"q": "p%ge_"}).text
    assert re.findall(ADDRESS_CELL.format("[^<]+@paged\\.test"), literal) == ["p%ge_x@paged.test"]
    assert web.cli("role", "revoke", OLGA, "paged.test").returncode == 0


def test_server_admin_domains_roles_and_acting_as_domain_admin(web: Web, session: Session) -> None:
    c, token = session(ROOT)
    r = c.post("/admin/domains/add", data={"csrf": token, "domain": "New.Example."})
    assert r.headers["location"] == "/domains/new.example?done=added"
    assert "new.example" in c.get("/domains", params={"q": "new"}).text
    r = c.post("/admin/roles/grant", data={"csrf": token, "user": ANN,
                                           "domain": "new.example",
                                           "back": "/domains/new.example"})
    assert r.headers["location"] == "/domains/new.example?done=granted"
    assert ANN in c.get("/domains/new.example").text
    # acts as the admin of any domain
    r = c.post("/domains/other.test/defaults", data={
        "csrf": token, "filtering": "off", "action": "quarantine",
        "users_may_override": "yes"})
    assert r.status_code == 400  # no [quarantine] on this server: not offered
    r = c.post("/domains/other.test/defaults", data={
        "csrf": token, "filtering": "off", "action": "domain-box",
        "users_may_override": "yes"})
    assert r.status_code == 303
    # a domain in the URL must be a domain name, even for the server admin
    assert c.get("/domains/%3Cscript%3E/users").status_code == 404
    r = c.post("/domains/a%20b/defaults", data={"csrf": token, "filtering": "on",
                                                "action": "", "users_may_override": "yes"})
    assert r.status_code == 404
    assert on_store(web, lambda db: PrefsStore(db).domain("a b")) is None
    assert on_store(web, lambda db: PrefsStore(db).domain("new.example")) is not None
    assert on_store(web, lambda db: RoleStore(db).roles_of(ANN)).domains == {"new.example"}
    other = on_store(web, lambda db: PrefsStore(db).domain("other.test"))
    assert other is not None and (other.spam_enabled, other.spam_action) == (
        False, "domain-box")
    with web.client() as a:  # ann is now an admin of new.example, and of nothing else
        login(a, ANN)
        assert a.get("/domains/new.example").status_code == 200
        assert a.get("/domains/example.com").status_code == 403
    r = c.post("/admin/roles/revoke", data={"csrf": token, "user": ANN,
                                            "domain": "new.example"})
    assert r.headers["location"] == "/admin/roles?done=revoked"
    bad = c.post("/admin/roles/grant", data={"csrf": token, "user": ANN,
                                             "domain": "<script>x</script>"})
    assert bad.status_code == 400 and "&lt;script&gt;" in bad.text
    assert "<script>x" not in bad.text
    assert not on_store(web, lambda db: RoleStore(db).roles_of(ANN)).any_admin
    assert "bad domain" not in web.cli("role", "list").stdout


def test_server_admin_overrides_greylist_panic_accounts(web: Web, session: Session) -> None:
    c, token = session(ROOT)
    r = c.post("/admin/overrides/add", data={
        "csrf": token, "network": "192.0.2.0/24", "action": "deny",
        "reason": "spam run", "expires": "2d"})
    assert r.headers["location"] == "/admin/overrides?done=added"
    bad = c.post("/admin/overrides/add", data={"csrf": token, "network": "192.0.2.5/24",
                                               "action": "allow"})
    assert bad.status_code == 400 and "did you mean 192.0.2.0/24" in bad.text
    assert "spam run" in c.get("/admin/overrides").text
    listed = web.cli("override", "list").stdout
    assert "192.0.2.0/24" in listed and "deny" in listed and ROOT in listed
    entry = on_store(web, lambda db: OverrideStore(db).list())[0]
    assert entry.expires_ts is not None and entry.expires_ts - entry.created_ts == 2 * 86400
    c.post("/admin/overrides/remove", data={"csrf": token, "network": "192.0.2.0/24"})
    r = c.post("/admin/greylist/allow", data={"csrf": token, "client": "198.51.100.7"})
    assert r.headers["location"] == "/admin/greylist?done=allowed"
    bad = c.post("/admin/greylist/allow", data={"csrf": token, "client": "10.0.0.0/8"})
    assert bad.status_code == 400 and "give an address or a /24" in bad.text
    assert "whitelisted 1" in c.get("/admin/greylist").text
    assert c.post("/admin/greylist/purge", data={"csrf": token}).status_code == 303
    r = c.post("/admin/panic", data={"csrf": token, "state": "on"})
    assert r.headers["location"] == "/admin?done=panic-on"
    assert on_store(web, lambda db: OverrideStore(db).list()) == []
    assert "panic is ON" in web.cli("panic", "status").stdout
    assert web.cli("user", "suspend", "zed@other.test").returncode == 0
    assert "zed@other.test" in c.get("/admin").text
    assert "zed@other.test" in c.get("/admin/suspended").text
    r = c.post("/admin/unsuspend", data={"csrf": token, "user": "zed@other.test",
                                         "back": "/admin/suspended"})
    assert r.headers["location"] == "/admin/suspended?done=unsuspended"
    c.post("/admin/panic", data={"csrf": token, "state": "off"})
    r = c.post("/admin/accounts/add", data={"csrf": token, "address": "temp@third.test",
                                            "password": "a long password"})
    assert r.headers["location"] == "/admin/accounts?done=added"
    assert "temp@third.test" in c.get("/admin/accounts", params={"q": "temp"}).text
    r = c.post("/admin/accounts/delete", data={"csrf": token,
                                               "address": "temp@third.test"})
    assert r.headers["location"] == "/admin/accounts?done=deleted"
    assert "panic is off" in web.cli("panic", "status").stdout
    assert not on_store(web, lambda db: UserStore(db).status(ZED)).suspended
    assert "temp@third.test" not in web.cli("account", "list").stdout
    log = web.logged()
    for action in ("override_add", "override_remove", "greylist_allow", "greylist_purge",
                   "panic", "unsuspend", "account_add", "account_delete"):
        assert f"event=web_admin user='root@example.com' action={action} " in log, action


SCRIPT = "<script>alert(1)</script>"
SQL = "x'); DROP TABLE ip_override; -- \" ; SELECT * FROM mail_user WHERE '1'='1"


def test_stored_values_are_escaped_and_kept_verbatim(web: Web, session: Session) -> None:
    # an account named by the CLI (which takes any name) is shown escaped
    assert web.cli("account", "add", f"{SCRIPT}@example.com").returncode == 0
    c, token = session(ROOT)
    c.post("/admin/overrides/add", data={"csrf": token, "network": "203.0.113.9",
                                         "action": "allow", "reason": SCRIPT})
    c.post("/admin/overrides/add", data={"csrf": token, "network": "203.0.113.10",
                                         "action": "deny", "reason": SQL})
    odd = "o'brien+%_;--@example.com"
    r = c.post("/admin/accounts/add", data={"csrf": token, "address": odd,
                                            "password": "a long password"})
    assert r.status_code == 303
    pages = [c.get("/admin/overrides").text, c.get("/admin/accounts").text,
             c.get("/domains/example.com/users").text]
    for page in pages:
        assert SCRIPT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@example.com" in pages[1]
    # and still reachable by the page: disabled by its stored name
    r = c.post("/admin/accounts/disable", data={"csrf": token,
                                                "address": f"{SCRIPT}@example.com"})
    assert r.status_code == 303
    r = c.post("/admin/domains/add", data={"csrf": token, "domain": SCRIPT})
    assert r.status_code == 400 and SCRIPT not in r.text
    reasons = {o.network: o.reason for o in on_store(web, lambda db: OverrideStore(db).list())}
    assert reasons == {"203.0.113.9/32": SCRIPT, "203.0.113.10/32": SQL}
    acc = on_store(web, lambda db: AccountStore(db).get(odd))
    assert acc is not None and acc.address == odd
    weird = on_store(web, lambda db: AccountStore(db).get(f"{SCRIPT}@example.com"))
    assert weird is not None and weird.disabled
    with web.client() as o:
        assert login(o, odd, "a long password").status_code == 303
    for net in ("203.0.113.9", "203.0.113.10"):
        c.post("/admin/overrides/remove", data={"csrf": token, "network": net})


def test_a_plain_login_after_all_this_is_still_plain(web: Web, session: Session) -> None:
    with web.client() as c:
        assert login(c, ZED, PASSWORD).status_code == 303
        assert c.get("/admin").status_code == 403


def test_overview_shows_alerts_and_the_qmail_queue(web: Web, session: Session) -> None:
    import time  # noqa: PLC0415

    from mailguard.store.alerts import AlertStore  # noqa: PLC0415
    from mailguard.store.queue_readings import QueueReadingRecord, QueueReadingStore  # noqa: PLC0415

    now = time.time()

    async def seed(db: Database) -> None:
        alerts = AlertStore(db)
        await alerts.touch("scanner:clamd:mx1", "scanner", "clamd <down> for 10 min",
                           host="mx1", now=now - 600, remind_s=3600)
        await alerts.touch("dnsbl:bl.test:mx1", "dnsbl", "zone disabled", host="mx1",
                           now=now - 7200, remind_s=3600)
        await alerts.resolve("dnsbl:bl.test:mx1", now=now - 3600)
        readings = QueueReadingStore(db)
        for i, messages in enumerate((3, 40, 120)):
            await readings.add(QueueReadingRecord("mx1", now - 3600 + i * 600, messages,
                                                  messages // 2, 1, messages - 1, 900.0))

    on_store(web, seed)
    c, _ = session(ROOT)
    page = c.get("/admin").text
    assert "<strong>scanner</strong> on mx1: clamd &lt;down&gt; for 10 min" in page
    assert "Over in the last 7 days:" in page and "dnsbl on mx1" in page
    assert "mx1: 120 in queue (1 local, 119 remote), 60 not yet preprocessed" in page
    assert "<svg" in page and "<script" not in page
    boss, _ = session(BOSS)
    assert boss.get("/admin").status_code == 403
