"""SpfCheck against the real rbldnsd zone spf.test (tests/data/dns/spf.test.generic:
pass = ip4:127.0.0.0/8 -all, fail = -all, softfail = ~all, neutral = ?all, none.spf.test
has no record), and against a DNS server that never answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import dns.resolver
import pytest

from mailguard.checks.greylist import GreylistCheck
from mailguard.checks.spf import SpfCheck
from mailguard.clock import FrozenClock
from mailguard.dnsresolve import DnsResolver
from mailguard.metrics import Metrics
from mailguard.pipeline import Pipeline
from mailguard.policy import CheckPolicy, Mode
from mailguard.settings.dns import DnsConfig
from mailguard.settings.greylist import GreylistConfig
from mailguard.settings.spf import SpfConfig
from mailguard.store.greylist import GreylistStore
from mailguard.store.repo import Store
from mailguard.verdict import Action, Stage
from tests.integration.greylist_support import session

T0 = 1_800_000_000.0
IP = "127.0.0.5"


def resolver(host: str, port: int, timeout_s: float = 2.0) -> dns.resolver.Resolver:
    """The daemon's way: the shared resolver's blocking twin."""
    config = DnsConfig(nameservers=(f"{host}:{port}",), timeout_s=timeout_s)
    return DnsResolver.from_config(config, FrozenClock(T0)).sync_resolver()


@pytest.fixture
def silent_dns() -> Iterator[tuple[str, int]]:
    """A UDP port that receives queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield "127.0.0.1", sock.getsockname()[1]


def check(dns_server: tuple[str, int], cfg: SpfConfig | None = None) -> SpfCheck:
    return SpfCheck(cfg or SpfConfig(), resolver(*dns_server), hostname="mx.test")


@pytest.mark.parametrize(
    ("sender", "result", "comment"),
    [
        ("alice@pass.spf.test", "pass",
         "domain of pass.spf.test designates 127.0.0.5 as permitted sender"),
        ("alice@fail.spf.test", "fail",
         "domain of fail.spf.test does not designate 127.0.0.5 as permitted sender"),
        ("alice@softfail.spf.test", "softfail",
         "transitioning domain of softfail.spf.test does not designate 127.0.0.5 as "
         "permitted sender"),
        ("alice@neutral.spf.test", "neutral",
         "127.0.0.5 is neither permitted nor denied by domain of neutral.spf.test"),
        ("alice@none.spf.test", "none",
         "domain of none.spf.test does not designate permitted sender hosts"),
        ("alice@Pass.SPF.test", "pass",
         "domain of pass.spf.test designates 127.0.0.5 as permitted sender"),
    ],
)
async def test_results_headers_and_facts(dns_server: tuple[str, int], sender: str,
                                         result: str, comment: str) -> None:
    s = session(FrozenClock(T0), IP, sender, helo="client.example")
    v = await check(dns_server).evaluate(Stage.MAIL, s)
    domain = sender.rpartition("@")[2].lower()
    assert (v.action, v.reason) == (Action.CONTINUE, f"{result} for {domain}")
    tx = s.transaction
    assert tx is not None
    assert tx.facts == {"spf": result, "spf_domain": domain}
    assert tx.add_headers == [
        f"Received-SPF: {result} (mx.test: {comment}) client-ip=127.0.0.5; "
        f'envelope-from="{sender}"; helo=client.example; identity=mailfrom;',
        f"Authentication-Results: mx.test; spf={result} smtp.mailfrom={domain}",
    ]


async def test_pass_needs_an_address_in_the_record(dns_server: tuple[str, int]) -> None:
    s = session(FrozenClock(T0), "192.0.2.1", "alice@pass.spf.test")
    await check(dns_server).evaluate(Stage.MAIL, s)
    assert s.transaction is not None and s.transaction.facts["spf"] == "fail"


@pytest.mark.parametrize(
    ("helo", "result", "identity_header"),
    [
        ("pass.spf.test", "pass", "Authentication-Results: mx.test; spf=pass "
         "smtp.helo=pass.spf.test"),
        ("fail.spf.test", "fail", "Authentication-Results: mx.test; spf=fail "
         "smtp.helo=fail.spf.test"),
        ("[127.0.0.5]", "none", "Authentication-Results: mx.test; spf=none "
         "smtp.helo=[127.0.0.5]"),
    ],
)
async def test_null_sender_checks_the_helo_identity(dns_server: tuple[str, int], helo: str,
                                                    result: str, identity_header: str) -> None:
    s = session(FrozenClock(T0), IP, "", helo=helo)
    await check(dns_server).evaluate(Stage.MAIL, s)
    assert s.transaction is not None
    assert s.transaction.facts["spf"] == result
    assert s.transaction.add_headers[0].endswith(
        f'envelope-from=""; helo={helo}; identity=helo;')
    assert s.transaction.add_headers[1] == identity_header


@pytest.mark.parametrize("kw", [{"relay": True}, {"auth": "alice"}])
async def test_relay_and_authenticated_clients_are_not_checked(
        dns_server: tuple[str, int], kw: dict[str, object]) -> None:
    s = session(FrozenClock(T0), IP, "alice@fail.spf.test", relay=bool(kw.get("relay")),
                auth=str(kw.get("auth", "")))
    v = await check(dns_server, SpfConfig(fail="reject")).evaluate(Stage.MAIL, s)
    assert v.action is Action.CONTINUE
    assert s.transaction is not None
    assert (s.transaction.facts, s.transaction.add_headers) == ({}, [])


@pytest.mark.parametrize(
    ("mode", "sender", "expected"),
    [
        (Mode.ENFORCE, "alice@fail.spf.test",
         "550 5.7.23 SPF validation failed: SPF fail - not authorized"),
        (Mode.LOG, "alice@fail.spf.test", None),  # configured, not enforced
        (Mode.ENFORCE, "alice@softfail.spf.test", None),  # softfail stays "tag"
        (Mode.ENFORCE, "alice@pass.spf.test", None),
    ],
)
async def test_reject_only_when_configured_and_enforced(
        dns_server: tuple[str, int], mode: Mode, sender: str, expected: str | None) -> None:
    pipeline = Pipeline([(check(dns_server, SpfConfig(fail="reject")), CheckPolicy(mode=mode))],
                        Metrics())
    s = session(FrozenClock(T0), IP, sender)
    v = await pipeline.run(Stage.MAIL, s)
    assert (str(v.reply) if v.reply else None) == expected
    assert s.transaction is not None and len(s.transaction.add_headers) == 2


async def test_default_policy_never_rejects(dns_server: tuple[str, int]) -> None:
    pipeline = Pipeline([(check(dns_server), CheckPolicy(mode=Mode.ENFORCE))], Metrics())
    s = session(FrozenClock(T0), IP, "alice@fail.spf.test")
    assert (await pipeline.run(Stage.MAIL, s)).action is Action.CONTINUE


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (SpfConfig(), None),
        (SpfConfig(temperror="tempfail"), "451 4.7.24 SPF temporary error: "),
    ],
)
async def test_dns_down_is_temperror_per_policy(silent_dns: tuple[str, int], cfg: SpfConfig,
                                                expected: str | None) -> None:
    spf_check = SpfCheck(cfg, resolver(*silent_dns, timeout_s=0.3), hostname="mx.test")
    pipeline = Pipeline([(spf_check, CheckPolicy())], Metrics())
    s = session(FrozenClock(T0), IP, "alice@pass.spf.test")
    v = await pipeline.run(Stage.MAIL, s)
    tx = s.transaction
    assert tx is not None and tx.facts["spf"] == "temperror"
    assert tx.add_headers[0].startswith(
        "Received-SPF: temperror (mx.test: temporary error in processing during lookup of "
        "pass.spf.test: SPF Temporary Error: DNS ")
    assert tx.add_headers[1] == ("Authentication-Results: mx.test; spf=temperror "
                                 "smtp.mailfrom=pass.spf.test")
    if expected is None:
        assert v.action is Action.CONTINUE
    else:
        assert v.action is Action.TEMPFAIL and str(v.reply).startswith(expected)


async def test_greylisting_keys_on_the_spf_domain(dns_server: tuple[str, int],
                                                  tmp_path: object) -> None:
    """SPF at MAIL, greylisting at RCPT: a retry from another address of the sender's SPF
    pool passes; the same retry without the spf-domain key would be a first try."""
    from mailguard.store import migrate  # noqa: PLC0415

    url = f"sqlite:///{tmp_path}/mailguard.db"
    await migrate.upgrade(url)
    store = await Store.open(url)
    try:
        grey = GreylistCheck(GreylistConfig(key="spf-domain"), GreylistStore(store.db),
                             Metrics())
        pipeline = Pipeline([(check(dns_server), CheckPolicy()), (grey, CheckPolicy())],
                            Metrics())
        clock = FrozenClock(T0)
        for ip, advance, expected in (("127.0.0.5", 0, Action.TEMPFAIL),
                                      ("127.1.2.3", 301, Action.CONTINUE)):
            clock.advance(advance)
            s = session(clock, ip, "alice@pass.spf.test")
            assert (await pipeline.run(Stage.MAIL, s)).action is Action.CONTINUE
            assert s.transaction is not None
            s.transaction.rcpt = "bob@example.com"
            assert (await pipeline.run(Stage.RCPT, s)).action is expected
        [row] = await GreylistStore(store.db).triplets()
        assert row.client_key == "pass.spf.test"
    finally:
        await store.close()
