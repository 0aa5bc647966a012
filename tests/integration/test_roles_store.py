"""Web roles and the admin pages' listings in the store, on SQLite and the real
PostgreSQL: grant/revoke/list and what a login may administer; accounts, domains and
suspended users a page at a time, searched by prefix with %, _ and quotes taken
literally; a domain's users-may-override switch."""

from __future__ import annotations

from mailguard.store.accounts import AccountStore
from mailguard.store.prefs import PrefsStore
from mailguard.store.repo import Store
from mailguard.store.roles import NO_ROLES, SERVER, Roles, RoleStore
from mailguard.store.users import UserStore

T0 = 1_800_000_000.0


async def test_grant_revoke_list_and_roles_of(store: Store) -> None:
    roles = RoleStore(store.db)
    assert await roles.roles_of("root@example.com") == NO_ROLES
    assert await roles.grant("Root@Example.com", SERVER, T0)
    assert not await roles.grant("root@example.com", "*", T0 + 1)  # once
    assert await roles.grant("boss@example.com", "Example.com", T0)
    assert await roles.grant("boss@example.com", "other.test", T0)
    assert await roles.grant("o'brien@example.com", "example.com", T0)
    root = await roles.roles_of("ROOT@example.com")
    boss = await roles.roles_of("boss@example.com")
    assert root == Roles(True, frozenset())
    assert boss == Roles(False, frozenset({"example.com", "other.test"}))
    assert root.administers("anything.test") and boss.administers("OTHER.test")
    assert not boss.administers("third.test")
    # who may act on whose account
    assert root.covers(boss) and boss.covers(await roles.roles_of("o'brien@example.com"))
    assert not boss.covers(root) and not Roles(False, frozenset({"example.com"})).covers(boss)
    assert [(g.user, g.domain) for g in await roles.list()] == [
        ("root@example.com", "*"), ("boss@example.com", "example.com"),
        ("o'brien@example.com", "example.com"), ("boss@example.com", "other.test")]
    assert [g.user for g in await roles.list(domain="example.com")] == [
        "boss@example.com", "o'brien@example.com"]
    assert [g.domain for g in await roles.list(user="boss@example.com")] == [
        "example.com", "other.test"]
    assert await roles.revoke("boss@example.com", "other.test")
    assert not await roles.revoke("boss@example.com", "other.test")
    assert (await roles.roles_of("boss@example.com")).domains == {"example.com"}


async def test_pages_and_literal_prefix_search(store: Store) -> None:
    accounts = AccountStore(store.db)
    names = [f"u{i:03d}@a.test" for i in range(120)] + [
        "u%x@a.test", "u_y@a.test", "o'brien@a.test", "u001@b.test", "x@sub.a.test"]
    for name in names:
        await accounts.add(name, None, T0)
    first = await accounts.page(domain="a.test", limit=50)
    rest = await accounts.page(domain="a.test", after=first[-1].address, limit=500)
    seen = [a.address for a in first + rest]  # in the database's collation order
    assert len(first) == 50 and len(seen) == len(set(seen)) == 123
    assert {"o'brien@a.test", "u%x@a.test", "u_y@a.test"} <= set(seen)
    assert "u001@b.test" not in seen and "x@sub.a.test" not in seen
    assert [a.address for a in await accounts.page(prefix="u%")] == ["u%x@a.test"]
    assert [a.address for a in await accounts.page(prefix="U_")] == ["u_y@a.test"]
    assert [a.address for a in await accounts.page(prefix="o'")] == ["o'brien@a.test"]
    assert len(await accounts.page(prefix="u0", domain="a.test", limit=500)) == 100
    prefs = PrefsStore(store.db)
    for d in ("a.test", "a_b.test", "ab.test", "b.test"):
        await prefs.set_domain(d, T0)
    assert [d.domain for d in await prefs.domain_page(prefix="a_")] == ["a_b.test"]
    assert [d.domain for d in await prefs.domain_page(after="a_b.test", limit=1)] == [
        "ab.test"]
    users = UserStore(store.db)
    for name in ("u%x@a.test", "zed@b.test", "ann@a.test"):
        await users.suspend(name, "too many", T0)
    await users.unsuspend("ann@a.test")
    assert [s.user for s in await users.suspended()] == ["u%x@a.test", "zed@b.test"]
    assert [s.user for s in await users.suspended(domain="a.test")] == ["u%x@a.test"]


async def test_users_may_override_switch(store: Store) -> None:
    prefs = PrefsStore(store.db)
    created = await prefs.set_domain("example.com", T0, spam_enabled=True)
    assert created.users_may_override  # the default: users choose for themselves
    locked = await prefs.set_domain("example.com", T0, users_may_override=False)
    assert not locked.users_may_override and locked.spam_enabled
    kept = await prefs.set_domain("example.com", T0, spam_action="delete")
    assert not kept.users_may_override  # None keeps it
    _, domains = await prefs.lookup(["joe@example.com"])
    assert not domains["example.com"].users_may_override
