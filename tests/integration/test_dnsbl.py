"""The DNS resolver and the DNSBL check against the real rbldnsd (tests/data/dns), with a
real SQLite override store; a silent UDP port for timeouts."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import dns.message
import pytest

from mailguard.checks.dnsbl import LOOKUP_ERROR, DnsblCheck
from mailguard.clock import FrozenClock
from mailguard.context import Session
from mailguard.dnsresolve import DnsResolver
from mailguard.errors import TemporaryError
from mailguard.metrics import Metrics
from mailguard.pipeline import Pipeline, enforce_deferred
from mailguard.policy import CheckPolicy
from mailguard.settings.dns import DnsConfig
from mailguard.settings.dnsbl import DnsblConfig, DnsblZone
from mailguard.store import migrate
from mailguard.store.overrides import OverrideCache, OverrideStore
from mailguard.store.repo import Store
from mailguard.verdict import Action, Stage, Verdict

NOW = 1_800_000_000.0


class CountingProxy:
    """A UDP forwarder in front of rbldnsd recording the names asked (proves caching)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.names: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(2)
            while not self._stop.is_set():
                try:
                    data, client = self.sock.recvfrom(4096)
                except TimeoutError:
                    continue
                self.names.append(dns.message.from_wire(data).question[0].name.to_text())
                up.sendto(data, self.upstream)
                try:
                    reply, _ = up.recvfrom(4096)
                except TimeoutError:
                    continue
                self.sock.sendto(reply, client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def proxy(dns_server: tuple[str, int]) -> Iterator[CountingProxy]:
    p = CountingProxy(dns_server)
    yield p
    p.close()


@pytest.fixture
def silent_port() -> Iterator[str]:
    """A bound UDP port that never answers: every query to it times out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def resolver_for(addr: str, clock: FrozenClock | None = None,
                 timeout_s: float = 2.0) -> DnsResolver:
    return DnsResolver(DnsConfig(nameservers=(addr,), timeout_s=timeout_s),
                       clock or FrozenClock(NOW))


def ns(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


# --- the resolver --------------------------------------------------------------------------


async def test_resolver_answers_and_caches(proxy: CountingProxy) -> None:
    clock = FrozenClock(NOW)
    r = resolver_for(proxy.addr, clock)
    assert await r.a("2.0.0.127.bl.test") == ["127.0.0.2"]
    assert await r.txt("2.0.0.127.bl.test") == ["Listed in bl.test (127.0.0.2)"]
    assert await r.a("1.0.0.127.bl.test") is None  # NXDOMAIN
    assert await r.a("bl.test") is None  # the name exists, no A record
    assert await r.txt("pass.spf.test") == ["v=spf1 ip4:127.0.0.0/8 -all"]
    assert await r.query("bl.test", "SOA") == ["ns.bl.test. hostmaster.bl.test. 1 60 60 60 60"]
    asked = len(proxy.names)
    assert asked == 6
    # all cached (NXDOMAIN too, by the SOA's 60 s): no new query
    assert await r.a("2.0.0.127.bl.test") == ["127.0.0.2"]
    assert await r.a("1.0.0.127.BL.test.") is None
    assert len(proxy.names) == asked
    clock.advance(61)  # every TTL in the zone is 60 s
    assert await r.a("1.0.0.127.bl.test") is None
    assert proxy.names[asked:] == ["1.0.0.127.bl.test."]


async def test_resolver_timeout_and_refused(silent_port: str) -> None:
    r = resolver_for(silent_port, timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(TemporaryError, match=r"2\.0\.0\.127\.bl\.test A: timed out after 0\.3s"):
        await r.a("2.0.0.127.bl.test")
    assert time.monotonic() - started < 1.5
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # closed port: refused
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(TemporaryError, match=r"dns: 2\.0\.0\.127\.bl\.test A"):
        await resolver_for(closed, timeout_s=0.5).a("2.0.0.127.bl.test")


def test_sync_resolver_uses_the_same_server(dns_server: tuple[str, int]) -> None:
    sync = resolver_for(ns(dns_server)).sync_resolver()
    answer = sync.resolve("fail.spf.test", "TXT")
    assert [b"".join(r.strings) for r in answer] == [b"v=spf1 -all"]


# --- the check -----------------------------------------------------------------------------


@dataclass
class Rig:
    check: DnsblCheck
    metrics: Metrics
    clock: FrozenClock
    overrides: OverrideStore | None

    async def run(self, client: str, env: Mapping[str, str] | None = None,
                  relay: bool = False) -> tuple[Verdict, Session]:
        session = Session(ipaddress.ip_address(client), 25000, self.clock, env=env or {},
                          relay_client=relay)
        return await self.check.evaluate(Stage.CONNECT, session), session


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite:///{tmp_path}/mailguard.db"
    await migrate.upgrade(url)
    opened = await Store.open(url)
    yield opened
    await opened.close()


def make_rig(server: str, config: DnsblConfig, store: Store | None = None,
             timeout_s: float = 2.0) -> Rig:
    clock = FrozenClock(NOW)
    metrics = Metrics()
    repo = OverrideStore(store.db) if store else None
    cache = OverrideCache(repo, clock) if repo else None
    check = DnsblCheck(config, resolver_for(server, clock, timeout_s), cache, metrics, clock)
    return Rig(check, metrics, clock, repo)


BL = DnsblZone("bl.test")
BL2_TEMP = DnsblZone("bl2.test", reply="temp")


@pytest.mark.parametrize(
    ("client", "zones", "reply", "reason"),
    [
        ("127.0.0.2", (BL,), "553 5.7.1 Listed in bl.test (127.0.0.2)", "listed bl.test 127.0.0.2"),
        ("::ffff:127.0.0.2", (BL,), "553 5.7.1 Listed in bl.test (127.0.0.2)",
         "listed bl.test 127.0.0.2"),
        ("127.0.0.1", (BL,), None, "not listed"),
        ("192.0.2.77", (BL,), "553 5.7.1 TEST-NET-1 block", "listed bl.test 127.0.0.3"),
        ("192.0.2.1", (BL,), None, "not listed"),  # !192.0.2.1: excluded from the /24
        ("10.1.2.3", (BL,), "553 5.7.1 rejected: 10.1.2.3 is listed in bl.test",
         "listed bl.test 127.0.0.4"),  # no TXT: the template
        ("10.1.2.3", (DnsblZone("bl.test", perm_code=554, message="{zone}: {ip} no"),),
         "554 5.7.1 bl.test: 10.1.2.3 no", "listed bl.test 127.0.0.4"),
        ("192.0.2.77", (DnsblZone("bl.test", codes=("127.0.0.2",)),), None, "not listed"),
        ("127.0.0.10", (BL,), None, "not listed (errors: bl.test)"),  # 127.255.255.254
        ("2001:db8:bad::1", (BL,), "553 5.7.1 single host", "listed bl.test 127.0.0.5"),
        ("2001:db8:ba0::5", (BL,), "553 5.7.1 Listed in bl.test (2001:db8:ba0::5)",
         "listed bl.test 127.0.0.2"),
        ("2001:db8::1", (BL,), None, "not listed"),
        ("127.0.0.12", (BL, BL2_TEMP), "451 4.7.1 Listed in bl2.test (127.0.0.12)",
         "listed bl2.test 127.0.0.2"),
        ("127.0.0.11", (BL2_TEMP, BL), "451 4.7.1 Listed in bl2.test (127.0.0.11)",
         "listed bl2.test 127.0.0.2"),  # both list it: the first configured zone decides
    ],
)
async def test_zones(dns_server: tuple[str, int], client: str, zones: tuple[DnsblZone, ...],
                     reply: str | None, reason: str) -> None:
    rig = make_rig(ns(dns_server), DnsblConfig(zones=zones))
    verdict, session = await rig.run(client)
    assert (str(verdict.reply) if verdict.reply else None) == reply
    assert verdict.reason == reason
    assert session.facts["dnsbl"] == reason
    assert verdict.deferred is (reply is not None)
    errors = rig.metrics.value("mailguard_dnsbl_errors_total", zone="bl.test")
    assert errors == (1.0 if "errors" in reason else 0.0)


async def test_anti_zone_exempts(dns_server: tuple[str, int]) -> None:
    rig = make_rig(ns(dns_server), DnsblConfig(zones=(BL,), anti_zones=("bl2.test",)))
    verdict, _ = await rig.run("127.0.0.11")  # listed in bl.test, "anti-listed" in bl2.test
    assert (verdict.action, verdict.reason) == (Action.CONTINUE, "anti-listed bl2.test")
    verdict, _ = await rig.run("127.0.0.2")  # not in bl2.test: blocked
    assert verdict.action is Action.REJECT


@pytest.mark.parametrize(
    ("client", "env", "relay", "expected"),
    [
        ("127.0.0.2", {"RBLSMTPD": ""}, False, (None, "RBLSMTPD empty: not blocked")),
        ("127.0.0.1", {"RBLSMTPD": "no mail from you"}, False,
         ("451 no mail from you", "RBLSMTPD block (451)")),
        ("127.0.0.1", {"RBLSMTPD": "-go away"}, False, ("553 go away", "RBLSMTPD block (553)")),
        ("127.0.0.2", {"RBLSMTPD": "-go away"}, True, ("553 go away", "RBLSMTPD block (553)")),
        ("127.0.0.2", {}, True, (None, "relay client")),
    ],
)
async def test_rblsmtpd_env_and_relay_clients(dns_server: tuple[str, int], client: str,
                                              env: dict[str, str], relay: bool,
                                              expected: tuple[str | None, str]) -> None:
    rig = make_rig(ns(dns_server), DnsblConfig(zones=(BL,)))
    verdict, _ = await rig.run(client, env, relay)
    assert (str(verdict.reply) if verdict.reply else None, verdict.reason) == expected


async def test_overrides(dns_server: tuple[str, int], store: Store) -> None:
    rig = make_rig(ns(dns_server), DnsblConfig(zones=(BL,)), store)
    assert rig.overrides is not None
    await rig.overrides.add("127.0.0.0/30", "allow", reason="partner", now=NOW)
    await rig.overrides.add("127.0.0.1", "deny", reason="spam run", now=NOW)
    await rig.overrides.add("192.0.2.0/24", "allow", now=NOW, expires_ts=NOW + 60)
    verdict, session = await rig.run("127.0.0.2")  # listed, but allowed
    assert (verdict.action, verdict.reason) == (Action.CONTINUE, "allow override 127.0.0.0/30")
    assert session.facts["override"] == "allow"
    verdict, session = await rig.run("127.0.0.1")  # unlisted, denied
    assert str(verdict.reply) == (
        "554 5.7.1 connections from 127.0.0.1 are refused by local policy: spam run")
    assert (verdict.action, verdict.deferred) == (Action.REJECT, True)
    assert session.facts["override"] == "deny"
    verdict, _ = await rig.run("192.0.2.77")  # allowed while the entry lasts
    assert verdict.action is Action.CONTINUE
    rig.clock.advance(60)  # expired: the listing applies again
    verdict, session = await rig.run("192.0.2.77")
    assert verdict.reason == "listed bl.test 127.0.0.3"
    assert "override" not in session.facts


@pytest.mark.parametrize(
    ("on_error", "action", "reply"),
    [("open", Action.CONTINUE, None), ("tempfail", Action.TEMPFAIL, LOOKUP_ERROR)],
)
async def test_dns_timeout(silent_port: str, on_error: str, action: Action,
                           reply: object) -> None:
    zone = DnsblZone("bl.test", on_error="open" if on_error == "open" else "tempfail")
    rig = make_rig(silent_port, DnsblConfig(zones=(zone,)), timeout_s=0.3)
    pipeline = Pipeline([(rig.check, CheckPolicy())], rig.metrics)
    session = Session(ipaddress.ip_address("127.0.0.2"), 25000, rig.clock)
    assert (await pipeline.run(Stage.CONNECT, session)).action is Action.CONTINUE
    deferred = enforce_deferred(session)  # what RCPT will get
    assert (deferred.action, deferred.reply) == (action, reply)
    assert rig.metrics.value("mailguard_dnsbl_errors_total", zone="bl.test") == 1.0
    assert "timed out after 0.3s" in session.facts["dnsbl"] or on_error == "open"
    assert session.facts["dnsbl"].startswith(
        "not listed (errors: bl.test)" if on_error == "open" else "lookup error bl.test: dns:")


async def test_health_probe_disables_a_bad_zone(proxy: CountingProxy) -> None:
    # dbl.test is a domain list: it does not list 127.0.0.2, so as an IP zone it fails
    # the RFC 5782 probe; bl.test passes.
    config = DnsblConfig(zones=(BL, DnsblZone("dbl.test")), health_probe=True,
                         health_interval_s=300)
    rig = make_rig(proxy.addr, config)
    verdict, _ = await rig.run("127.0.0.11")
    assert verdict.reason == "listed bl.test 127.0.0.3"
    probes = {"2.0.0.127.bl.test.", "1.0.0.127.bl.test.", "2.0.0.127.dbl.test.",
              "1.0.0.127.dbl.test."}
    assert probes <= set(proxy.names)
    assert "11.0.0.127.dbl.test." not in proxy.names  # disabled: never asked
    assert rig.metrics.value("mailguard_dnsbl_zone_up", zone="dbl.test") == 0.0
    assert rig.metrics.value("mailguard_dnsbl_zone_up", zone="bl.test") == 1.0
    assert rig.metrics.value("mailguard_dnsbl_zone_disabled_total", zone="dbl.test") == 1.0
    asked = len(proxy.names)
    rig.clock.advance(299)  # no new probe before the interval
    await rig.run("127.0.0.12")
    assert [n for n in proxy.names[asked:] if n.startswith(("1.0.0.127", "2.0.0.127"))] == []
    rig.clock.advance(1801)  # the interval and every TTL (rbldnsd's A: 2100 s) passed
    await rig.run("127.0.0.13")
    assert probes <= set(proxy.names[asked:])
    # still unhealthy: disabled once, counted once
    assert rig.metrics.value("mailguard_dnsbl_zone_disabled_total", zone="dbl.test") == 1.0
