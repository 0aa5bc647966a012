"""GreylistCheck with a real store and real Session objects, walking the windows with a
FrozenClock (no sleeping): first try, early retry, retry after the delay, other IPs of
the /24 and /64, auto-whitelist, window expiry, exemptions, log mode, store failures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mailguard import __version__
from mailguard.checks.greylist import KNOWN_TTL_S, GreylistCheck
from mailguard.clock import FrozenClock
from mailguard.metrics import Metrics
from mailguard.pipeline import ERROR_REPLY, Pipeline
from mailguard.policy import CheckPolicy, Mode, OnError
from mailguard.settings.greylist import GreylistConfig
from mailguard.store.greylist import GreylistStore
from mailguard.store.overrides import OverrideCache, OverrideStore
from mailguard.store.repo import Store
from mailguard.verdict import Action, Stage, Verdict
from tests.integration.greylist_support import rcpt, session

T0 = 1_800_000_000.0
SENDER, TO = "alice@example.org", "bob@example.com"
DEFER_300 = "451 4.7.1 Greylisted, please try again in 300 seconds"


def make(store: Store, cfg: GreylistConfig | None = None, *, metrics: Metrics | None = None,
         add_header: bool = True, clock: FrozenClock | None = None) -> GreylistCheck:
    overrides = OverrideCache(OverrideStore(store.db), clock or FrozenClock(T0))
    return GreylistCheck(cfg or GreylistConfig(), GreylistStore(store.db),
                         metrics or Metrics(), overrides=overrides.match, add_header=add_header)


def reply(v: Verdict) -> str:
    return str(v.reply) if v.reply else "continue"


async def test_first_try_early_retry_retry_after_delay(store: Store) -> None:
    clock = FrozenClock(T0)
    metrics = Metrics()
    check = make(store, metrics=metrics, clock=clock)
    s = session(clock, "192.0.2.10", SENDER)
    assert reply(await rcpt(check, s, TO)) == DEFER_300
    clock.advance(120)
    s = session(clock, "192.0.2.10", SENDER)
    assert reply(await rcpt(check, s, TO)) == (
        "451 4.7.1 Greylisted, please try again in 180 seconds")
    clock.advance(190)
    s = session(clock, "192.0.2.10", SENDER)
    v = await rcpt(check, s, TO)
    assert v.action is Action.CONTINUE and v.reason == "greylist passed after 310s"
    assert s.transaction is not None
    assert s.transaction.add_headers == [
        f"X-Greylist: delayed 310 seconds by mailguard-{__version__}; "
        "Fri, 15 Jan 2027 08:05:10 GMT"]
    # the next message of the triplet passes at once, without a header
    clock.advance(3600)
    s = session(clock, "192.0.2.10", "ALICE+list@Example.org")  # the same sender, normalised
    v = await rcpt(check, s, TO)
    assert v.reason == "triplet passed before"
    assert s.transaction is not None and s.transaction.add_headers == []
    assert metrics.value("mailguard_greylist_total", result="deferred") == 2
    assert metrics.value("mailguard_greylist_total", result="passed") == 2


async def test_header_once_per_message_with_several_recipients(store: Store) -> None:
    clock = FrozenClock(T0)
    check = make(store)
    s = session(clock, "192.0.2.10", SENDER)
    for to in (TO, "carol@example.com"):
        assert reply(await rcpt(check, s, to)) == DEFER_300
    clock.advance(400)
    s = session(clock, "192.0.2.10", SENDER)
    for to in (TO, "carol@example.com"):
        assert (await rcpt(check, s, to)).action is Action.CONTINUE
    assert s.transaction is not None
    assert [h[:36] for h in s.transaction.add_headers] == ["X-Greylist: delayed 400 seconds by m"]


@pytest.mark.parametrize(
    ("first_ip", "retry_ip", "cfg", "passes"),
    [
        ("192.0.2.10", "192.0.2.200", GreylistConfig(), True),  # same /24
        ("192.0.2.10", "192.0.3.10", GreylistConfig(), False),  # another /24
        ("192.0.2.10", "192.0.2.200", GreylistConfig(key="ip"), False),  # exact IP
        ("2001:db8:1:2::10", "2001:db8:1:2:ffff::99", GreylistConfig(), True),  # same /64
        ("2001:db8:1:2::10", "2001:db8:1:3::10", GreylistConfig(), False),  # another /64
        ("2001:db8:1:2::10", "2001:db8:1:3::10", GreylistConfig(ipv6_prefix=48), True),
        ("::ffff:192.0.2.10", "192.0.2.11", GreylistConfig(), True),  # mapped = IPv4
    ],
)
async def test_retry_from_another_address(store: Store, first_ip: str, retry_ip: str,
                                          cfg: GreylistConfig, passes: bool) -> None:
    clock = FrozenClock(T0)
    check = make(store, cfg)
    assert reply(await rcpt(check, session(clock, first_ip, SENDER), TO)) == DEFER_300
    clock.advance(301)
    v = await rcpt(check, session(clock, retry_ip, SENDER), TO)
    assert (v.action is Action.CONTINUE) is passes
    if not passes:
        assert reply(v) == DEFER_300  # a first try of its own


async def test_retry_window_expiry_restarts(store: Store) -> None:
    clock = FrozenClock(T0)
    check = make(store)
    assert reply(await rcpt(check, session(clock, "192.0.2.10", SENDER), TO)) == DEFER_300
    clock.advance(48 * 3600 + 1)
    v = await rcpt(check, session(clock, "192.0.2.10", SENDER), TO)
    assert reply(v) == DEFER_300  # (the hourly purge forgot it, or decide() restarts it)
    assert v.reason.startswith("greylisted: first try")
    clock.advance(300)
    v = await rcpt(check, session(clock, "192.0.2.10", SENDER), TO)
    assert v.reason == "greylist passed after 300s"


async def test_auto_whitelist_after_five_passes(store: Store) -> None:
    clock = FrozenClock(T0)
    metrics = Metrics()
    check = make(store, metrics=metrics)
    for n in range(5):
        sender = f"sender{chr(97 + n)}@example.org"
        assert reply(await rcpt(check, session(clock, "192.0.2.10", sender), TO)) == DEFER_300
        clock.advance(301)
        v = await rcpt(check, session(clock, "192.0.2.10", sender), TO)
        assert v.reason == "greylist passed after 301s"
        clock.advance(3600)  # passes count once an hour
    s = session(clock, "192.0.2.77", "brand-new@example.net")  # same /24, new triplet
    v = await rcpt(check, s, "someone@example.com")
    assert v.action is Action.CONTINUE and v.reason == "client whitelisted after 5 passes"
    assert metrics.value("mailguard_greylist_total", result="whitelisted") == 1
    # another /24 is not whitelisted
    v = await rcpt(check, session(clock, "192.0.3.1", "brand-new@example.net"), TO)
    assert reply(v) == DEFER_300


async def test_passes_within_one_hour_count_once(store: Store) -> None:
    clock = FrozenClock(T0)
    check = make(store)
    for n in range(6):
        await rcpt(check, session(clock, "192.0.2.10", f"s{chr(97 + n)}@example.org"), TO)
    clock.advance(301)
    for n in range(6):
        v = await rcpt(check, session(clock, "192.0.2.10", f"s{chr(97 + n)}@example.org"), TO)
        assert v.action is Action.CONTINUE
    v = await rcpt(check, session(clock, "192.0.2.10", "new@example.org"), TO)
    assert reply(v) == DEFER_300  # one burst of retries is one pass, not six


@pytest.mark.parametrize(
    ("kw", "cfg", "reason"),
    [
        ({"relay": True}, GreylistConfig(), "exempt: relay client"),
        ({"auth": "alice"}, GreylistConfig(), "exempt: authenticated"),
        ({}, GreylistConfig(exempt_clients=("192.0.2.0/28",)), "exempt: exempt client"),
        ({}, GreylistConfig(exempt_rcpts=("@example.com",)), "exempt: exempt recipient"),
        ({"sender": ""}, GreylistConfig(null_sender="exempt"), "exempt: null sender"),
    ],
)
async def test_exemptions(store: Store, kw: dict[str, object], cfg: GreylistConfig,
                          reason: str) -> None:
    clock = FrozenClock(T0)
    metrics = Metrics()
    check = make(store, cfg, metrics=metrics)
    s = session(clock, "192.0.2.10", str(kw.get("sender", SENDER)),
                relay=bool(kw.get("relay", False)), auth=str(kw.get("auth", "")))
    v = await rcpt(check, s, TO)
    assert (v.action, v.reason) == (Action.CONTINUE, reason)
    assert metrics.value("mailguard_greylist_total", result="exempt") == 1
    assert await GreylistStore(store.db).triplets() == []  # nothing stored


async def test_null_sender_greylisted_by_default(store: Store) -> None:
    clock = FrozenClock(T0)
    check = make(store)
    assert reply(await rcpt(check, session(clock, "192.0.2.10", ""), TO)) == DEFER_300
    [row] = await GreylistStore(store.db).triplets()
    assert (row.sender, row.rcpt) == ("<>", TO)


async def test_allow_override_exempts(store: Store) -> None:
    clock = FrozenClock(T0)
    await OverrideStore(store.db).add("192.0.2.0/24", "allow", reason="partner", now=T0)
    await OverrideStore(store.db).add("198.51.100.0/24", "deny", now=T0)
    check = make(store, clock=clock)
    v = await rcpt(check, session(clock, "192.0.2.10", SENDER), TO)
    assert v.reason == "exempt: allow override"
    v = await rcpt(check, session(clock, "198.51.100.1", SENDER), TO)
    assert reply(v) == DEFER_300  # deny is the DNSBL check's business
    no_overrides = make(store, replace(GreylistConfig(), honour_overrides=False), clock=clock)
    assert reply(await rcpt(no_overrides, session(clock, "192.0.2.10", SENDER), TO)) == DEFER_300
    # the DNSBL check's finding on the session is used as is
    s = session(clock, "203.0.113.5", SENDER)
    s.facts["override"] = "allow"
    assert (await rcpt(check, s, TO)).reason == "exempt: allow override"


async def test_spf_domain_key_across_pool_addresses(store: Store) -> None:
    clock = FrozenClock(T0)
    check = make(store, GreylistConfig(key="spf-domain"))
    s = session(clock, "192.0.2.10", "alice@pool.example")
    assert s.transaction is not None
    s.transaction.facts.update(spf="pass", spf_domain="pool.example")
    assert reply(await rcpt(check, s, TO)) == DEFER_300
    clock.advance(301)
    s = session(clock, "203.0.113.99", "alice@pool.example")  # another IP of the pool
    assert s.transaction is not None
    s.transaction.facts.update(spf="pass", spf_domain="pool.example")
    assert (await rcpt(check, s, TO)).reason == "greylist passed after 301s"
    # without an SPF pass the key is the net again
    s = session(clock, "203.0.113.99", "alice@pool.example")
    assert s.transaction is not None
    s.transaction.facts.update(spf="softfail", spf_domain="pool.example")
    assert reply(await rcpt(check, s, TO)) == DEFER_300
    keys = {r.client_key for r in await GreylistStore(store.db).triplets()}
    assert keys == {"pool.example", "203.0.113.0/24"}


async def test_log_mode_records_but_never_defers_nor_tags(store: Store) -> None:
    clock = FrozenClock(T0)
    check = make(store, add_header=False)
    pipeline = Pipeline([(check, CheckPolicy(mode=Mode.LOG))], Metrics())
    s = session(clock, "192.0.2.10", SENDER)
    s.transaction.rcpt = TO  # type: ignore[union-attr]
    assert (await pipeline.run(Stage.RCPT, s)).action is Action.CONTINUE
    assert s.transaction is not None and s.transaction.results[0].action is Action.TEMPFAIL
    clock.advance(400)
    s = session(clock, "192.0.2.10", SENDER)
    s.transaction.rcpt = TO  # type: ignore[union-attr]
    assert (await pipeline.run(Stage.RCPT, s)).action is Action.CONTINUE
    assert s.transaction is not None and s.transaction.add_headers == []


@pytest.mark.parametrize(("on_error", "action"), [(OnError.TEMPFAIL, Action.TEMPFAIL),
                                                  (OnError.OPEN, Action.CONTINUE)])
async def test_store_failure_follows_on_error(tmp_path: Path, on_error: OnError,
                                              action: Action) -> None:
    broken = await Store.open(f"sqlite:///{tmp_path}/no-tables.db", check_schema=False)
    try:
        check = GreylistCheck(GreylistConfig(honour_overrides=False),
                              GreylistStore(broken.db), Metrics())
        pipeline = Pipeline([(check, CheckPolicy(on_error=on_error))], Metrics())
        s = session(FrozenClock(T0), "192.0.2.10", SENDER)
        s.transaction.rcpt = TO  # type: ignore[union-attr]
        v = await pipeline.run(Stage.RCPT, s)
        assert v.action is action
        if action is Action.TEMPFAIL:
            assert v.reply == ERROR_REPLY
        assert s.transaction is not None
        assert "greylist update failed" in s.transaction.results[0].detail
    finally:
        await broken.close()


async def test_hourly_purge_forgets_old_entries(store: Store) -> None:
    clock = FrozenClock(T0)
    check = make(store)
    await rcpt(check, session(clock, "192.0.2.10", SENDER), TO)  # pending
    clock.advance(49 * 3600)  # past the retry window and the purge interval
    await rcpt(check, session(clock, "198.51.100.1", "x@example.net"), TO)
    rows = await GreylistStore(store.db).triplets()
    assert [r.client_key for r in rows] == ["198.51.100.0/24"]


async def test_known_passes_answered_without_the_store_for_a_while(store: Store) -> None:
    """A passed triplet (and a whitelisted client) is remembered for KNOWN_TTL_S: the
    store is not read again meanwhile; after it, the store decides again."""
    clock = FrozenClock(T0)
    check = make(store, GreylistConfig(delay_s=0, auto_whitelist_after=0), clock=clock)
    assert (await rcpt(check, session(clock, "192.0.2.10", SENDER), TO)).reason == \
        "greylist passed after 0s"
    # the admin forgets every triplet: this process still knows this one passed
    assert await GreylistStore(store.db).purge(T0 + 10**9, 1, 1) == (1, 0)
    clock.advance(KNOWN_TTL_S - 1)
    assert (await rcpt(check, session(clock, "192.0.2.10", SENDER), TO)).reason == \
        "triplet passed before"
    assert await GreylistStore(store.db).triplets() == []  # answered without the store
    clock.advance(2)
    assert (await rcpt(check, session(clock, "192.0.2.10", SENDER), TO)).reason == \
        "greylist passed after 0s"  # the store's decision again: a new triplet
