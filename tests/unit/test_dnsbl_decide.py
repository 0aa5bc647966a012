"""The DNSBL check's pure decisions, override matching, durations and the TTL cache."""

from __future__ import annotations

import ipaddress

import pytest

from mailguard.checks.dnsbl import (
    LOOKUP_ERROR,
    Status,
    ZoneResult,
    classify,
    decide,
    deny_reply,
    listing_reply,
    probe_problem,
    query_name,
    rblsmtpd_verdict,
)
from mailguard.cli.override import parse_duration
from mailguard.clock import FrozenClock
from mailguard.context import Session
from mailguard.dnsresolve import TtlCache
from mailguard.pipeline import enforce_deferred
from mailguard.settings.base import Invalid
from mailguard.settings.dnsbl import DnsblConfig, DnsblZone, parse_code
from mailguard.store.overrides import Override, canonical_network, match
from mailguard.verdict import Action, Reply

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    ("client", "zone", "expected"),
    [
        ("127.0.0.2", "bl.test", "2.0.0.127.bl.test"),
        ("192.0.2.99", "bl.test.", "99.2.0.192.bl.test"),
        ("::ffff:192.0.2.99", "bl.test", "99.2.0.192.bl.test"),  # mapped = IPv4
        ("2001:db8:bad::1", "bl.test",
         "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.a.b.0.8.b.d.0.1.0.0.2.bl.test"),
    ],
)
def test_query_name(client: str, zone: str, expected: str) -> None:
    assert query_name(ip(client), zone) == expected


RANGE = [parse_code("127.0.0.2-127.0.0.11")]


@pytest.mark.parametrize(
    ("answers", "codes", "expected"),
    [
        (None, [], (Status.NOT_LISTED, "")),
        ([], [], (Status.NOT_LISTED, "")),
        (["127.0.0.2"], [], (Status.LISTED, "127.0.0.2")),
        (["127.0.0.1"], [], (Status.LISTED, "127.0.0.1")),  # default: any 127/8 code
        (["127.0.0.11"], RANGE, (Status.LISTED, "127.0.0.11")),
        (["127.0.0.12"], RANGE, (Status.NOT_LISTED, "")),  # not an accepted code
        (["127.0.1.2"], [parse_code("127.0.1.0/24")], (Status.LISTED, "127.0.1.2")),
        (["127.255.255.254"], [], (Status.ERROR, "error answer 127.255.255.254")),
        (["127.255.255.252"], RANGE, (Status.ERROR, "error answer 127.255.255.252")),
        (["10.0.0.1"], [], (Status.ERROR, "error answer 10.0.0.1")),  # outside 127/8
        (["127.255.255.254", "127.0.0.4"], [], (Status.LISTED, "127.0.0.4")),
        (["127.0.0.20", "127.255.255.254"], RANGE, (Status.ERROR, "error answer 127.255.255.254")),
    ],
)
def test_classify(answers: list[str] | None, codes: list[tuple[ipaddress.IPv4Address,
                  ipaddress.IPv4Address]], expected: tuple[Status, str]) -> None:
    assert classify(answers, codes) == expected


@pytest.mark.parametrize(
    ("value", "action", "reply", "deferred"),
    [
        (None, None, None, False),
        ("", Action.CONTINUE, None, False),
        ("blocked, see http://x/", Action.TEMPFAIL, Reply(451, "blocked, see http://x/"), True),
        ("-go away", Action.REJECT, Reply(553, "go away"), True),
        ("-", Action.REJECT, Reply(553, ""), True),
        ("two\r\nlines", Action.TEMPFAIL, Reply(451, "two  lines"), True),
    ],
)
def test_rblsmtpd_env(value: str | None, action: Action | None, reply: Reply | None,
                      deferred: bool) -> None:
    verdict = rblsmtpd_verdict(value)
    if action is None:
        assert verdict is None
        return
    assert verdict is not None
    assert (verdict.action, verdict.reply, verdict.deferred) == (action, reply, deferred)


PERM = DnsblZone("bl.test")
TEMP = DnsblZone("bl2.test", reply="temp", message="{zone} says no to {ip}")
P554 = DnsblZone("b3.test", perm_code=554, on_error="tempfail")


@pytest.mark.parametrize(
    ("zone", "txt", "expected"),
    [
        (PERM, "Listed in bl.test (127.0.0.2)",
         b"553 5.7.1 Listed in bl.test (127.0.0.2)"),
        (PERM, "", b"553 5.7.1 rejected: 10.1.2.3 is listed in bl.test"),
        (TEMP, "", b"451 4.7.1 bl2.test says no to 10.1.2.3"),
        (P554, "x\ny", b"554 5.7.1 x y"),
    ],
)
def test_listing_reply(zone: DnsblZone, txt: str, expected: bytes) -> None:
    assert str(listing_reply(zone, ip("10.1.2.3"), txt)).encode() == expected


def test_deny_reply_names_the_reason() -> None:
    assert str(deny_reply(ip("::ffff:192.0.2.9"), "spam run")) == (
        "554 5.7.1 connections from 192.0.2.9 are refused by local policy: spam run")
    assert str(deny_reply(ip("192.0.2.9"), "")) == (
        "554 5.7.1 connections from 192.0.2.9 are refused by local policy")


CLIENT = ip("10.1.2.3")


@pytest.mark.parametrize(
    ("results", "action", "reply_code", "reason"),
    [
        ([], Action.CONTINUE, None, "not listed"),
        ([ZoneResult(PERM, Status.NOT_LISTED)], Action.CONTINUE, None, "not listed"),
        ([ZoneResult(PERM, Status.ERROR, "timeout")], Action.CONTINUE, None,
         "not listed (errors: bl.test)"),
        ([ZoneResult(P554, Status.ERROR, "timeout")], Action.TEMPFAIL, 451,
         "lookup error b3.test: timeout"),
        # a listing beats another zone's error, whatever that zone's on_error
        ([ZoneResult(P554, Status.ERROR, "timeout"), ZoneResult(TEMP, Status.LISTED, "127.0.0.2")],
         Action.TEMPFAIL, 451, "listed bl2.test 127.0.0.2"),
        # the first listing in configured order decides
        ([ZoneResult(TEMP, Status.LISTED, "127.0.0.2"), ZoneResult(PERM, Status.LISTED, "x")],
         Action.TEMPFAIL, 451, "listed bl2.test 127.0.0.2"),
        ([ZoneResult(PERM, Status.LISTED, "127.0.0.4")], Action.REJECT, 553,
         "listed bl.test 127.0.0.4"),
    ],
)
def test_decide(results: list[ZoneResult], action: Action, reply_code: int | None,
                reason: str) -> None:
    verdict = decide(results, CLIENT)
    assert verdict.action is action
    assert verdict.reason == reason
    if reply_code is None:
        assert verdict.reply is None and not verdict.deferred
    else:
        assert verdict.reply is not None and verdict.reply.code == reply_code
        assert verdict.deferred


def test_tempfail_zone_error_reply_is_rblsmtpd_c_text() -> None:
    verdict = decide([ZoneResult(P554, Status.ERROR, "x")], CLIENT)
    assert verdict.reply == LOOKUP_ERROR
    assert str(LOOKUP_ERROR) == "451 temporary RBL lookup error"


@pytest.mark.parametrize(
    ("listed", "unlisted", "problem"),
    [
        (["127.0.0.2"], None, None),
        (None, None, "does not list 127.0.0.2"),
        (["127.0.0.2"], ["127.0.0.2"], "lists 127.0.0.1 (127.0.0.2): the zone answers everything"),
        (None, ["127.0.0.2"], "lists 127.0.0.1 (127.0.0.2): the zone answers everything"),
    ],
)
def test_probe_problem(listed: list[str] | None, unlisted: list[str] | None,
                       problem: str | None) -> None:
    assert probe_problem(listed, unlisted) == problem


@pytest.mark.parametrize(
    ("zone", "key"),
    [
        (DnsblZone(""), "zone"),
        (DnsblZone("bl.test", perm_code=451), "perm_code"),
        (DnsblZone("bl.test", codes=("127.0.0.9-127.0.0.2",)), "codes"),
        (DnsblZone("bl.test", codes=("10.0.0.1",)), "codes"),
        (DnsblZone("bl.test", codes=("127.255.255.0/24",)), "codes"),
        (DnsblZone("bl.test", codes=("nonsense",)), "codes"),
        (DnsblZone("bl.test", message="{client} listed"), "message"),
    ],
)
def test_zone_validation(zone: DnsblZone, key: str) -> None:
    with pytest.raises(Invalid) as info:
        zone.validate()
    assert info.value.key == key


def test_config_validation() -> None:
    with pytest.raises(Invalid, match="twice"):
        DnsblConfig(zones=(DnsblZone("bl.test"), DnsblZone("BL.test."))).validate()
    with pytest.raises(Invalid):
        DnsblConfig(health_interval_s=0).validate()
    DnsblConfig(zones=(DnsblZone("bl.test", codes=("127.0.0.2-127.0.0.11",)),)).validate()


def _ov(network: str, action: str, expires: float | None = None) -> tuple[
        ipaddress.IPv4Network | ipaddress.IPv6Network, Override]:
    return ipaddress.ip_network(network), Override(
        network, "deny" if action == "deny" else "allow", "", 0.0, expires, "")


ENTRIES = [
    _ov("192.0.2.0/24", "allow"),
    _ov("192.0.2.128/25", "deny"),
    _ov("192.0.2.200/32", "allow", expires=100.0),
    _ov("2001:db8::/32", "deny"),
    _ov("198.51.100.0/24", "allow"),
    _ov("198.51.100.0/24", "deny"),
]


@pytest.mark.parametrize(
    ("client", "now", "expected"),
    [
        ("192.0.2.1", 50.0, "allow 192.0.2.0/24"),
        ("192.0.2.130", 50.0, "deny 192.0.2.128/25"),  # more specific wins
        ("192.0.2.200", 50.0, "allow 192.0.2.200/32"),
        ("192.0.2.200", 100.0, "deny 192.0.2.128/25"),  # expired: the next one applies
        ("::ffff:192.0.2.1", 50.0, "allow 192.0.2.0/24"),
        ("2001:db8:1::5", 50.0, "deny 2001:db8::/32"),
        ("198.51.100.1", 50.0, "deny 198.51.100.0/24"),  # same network: deny wins
        ("203.0.113.1", 50.0, None),
    ],
)
def test_override_match(client: str, now: float, expected: str | None) -> None:
    found = match(ENTRIES, ip(client), now)
    assert (f"{found.action} {found.network}" if found else None) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.0/24", "192.0.2.0/24"),
        (" 192.0.2.7 ", "192.0.2.7/32"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("::ffff:192.0.2.0/120", "192.0.2.0/24"),
        ("192.0.2.5/24", "'192.0.2.5/24' has host bits set; did you mean 192.0.2.0/24?"),
        ("192.0.2.0/33", "'192.0.2.0/33' is not an IP network (CIDR)"),
        ("example.com", "'example.com' is not an IP network (CIDR)"),
    ],
)
def test_canonical_network(text: str, expected: str) -> None:
    try:
        assert canonical_network(text) == expected
    except ValueError as exc:
        assert str(exc) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("15m", 900), ("3600s", 3600), ("2w", 1209600),
     ("90", 90), ("0d", None), ("3x", None), ("", None), ("-5s", None)],
)
def test_parse_duration(text: str, seconds: int | None) -> None:
    if seconds is None:
        with pytest.raises(ValueError):
            parse_duration(text)
    else:
        assert parse_duration(text) == seconds


def test_ttl_cache_expires_and_evicts() -> None:
    clock = FrozenClock()
    cache = TtlCache(2, clock)
    cache.put(("a", "A"), ["127.0.0.2"], 60)
    cache.put(("b", "A"), None, 10)  # negative answers are cached too
    assert cache.get(("b", "A")) == (True, None)
    clock.advance(10)
    assert cache.get(("b", "A")) == (False, None)
    assert cache.get(("a", "A")) == (True, ["127.0.0.2"])
    cache.put(("c", "A"), ["x"], 60)
    cache.put(("d", "A"), ["y"], 60)  # capacity 2: "a" (least recently used) goes
    assert cache.get(("a", "A")) == (False, None)
    assert len(cache) == 2
    cache.put(("e", "A"), ["z"], 0)  # TTL 0: not cached
    assert cache.get(("e", "A")) == (False, None)
    cache.put(("f", "A"), ["long"], 10**9)  # capped at MAX_TTL_S
    clock.advance(3600)
    assert cache.get(("f", "A")) == (False, None)


def test_deferred_refusal_spares_authenticated_clients() -> None:
    session = Session(ip("127.0.0.2"), 25000, FrozenClock())
    listed = decide([ZoneResult(PERM, Status.LISTED, "127.0.0.2")], session.client_ip)
    session.deferred.append(listed)
    assert enforce_deferred(session) is listed
    session.auth_user = "alice@example.com"  # AUTH after the connect-time decision
    assert enforce_deferred(session).action is Action.CONTINUE
