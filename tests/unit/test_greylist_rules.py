"""Greylisting decisions without I/O: sender normalisation, keys, exemptions, decide()."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from mailguard.checks.greylist_rules import (
    Decision,
    Result,
    allow_key,
    client_key,
    decide,
    deferral_reply,
    exemption,
    header,
    normalise_sender,
    rcpt_exempt,
)
from mailguard.config import build
from mailguard.errors import ConfigError
from mailguard.settings.greylist import GreylistConfig
from mailguard.store.greylist_records import ClientState, TripletState
from mailguard.verdict import Action

CFG = GreylistConfig()
T0 = 1_800_000_000.0
H = 3600.0
D = 86400.0


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("", "<>"),
        ("alice@example.org", "alice@example.org"),
        ("Alice@Example.ORG", "alice@example.org"),
        ("alice+news@example.org", "alice@example.org"),
        ("alice+a+b@example.org", "alice@example.org"),
        ("+alice@example.org", "+alice@example.org"),  # nothing before '+': kept
        ("prvs=0123abcdef=alice@example.org", "alice@example.org"),
        ("PRVS=9905C7C8D6=ms@dev.example", "ms@dev.example"),
        ("prvs=234d5777c=ross.lagerwall@example.com", "ross.lagerwall@example.com"),
        ("msprvs1=19999abcdef=bob@example.net", "bob@example.net"),
        ("prvs=alice/0123abcdef@example.org", "alice@example.org"),
        ("prvs=0123abcdef=alice+ext@example.org", "alice@example.org"),
        ("bounce-1234-5678@lists.example", "bounce-#-#@lists.example"),
        ("bounce-mc.us4_123.456-alice=example.org@mail.example",
         "bounce-mc.us4_123.#-alice=example.org@mail.example"),
        ("1234@example.org", "#@example.org"),
        ("user123@example.org", "user123@example.org"),  # digits glued to letters: kept
        ("123abc@example.org", "123abc@example.org"),
        ("list-bounces+alice=example.org@lists.example", "list-bounces@lists.example"),
        ("srs0=abcd=tt=example.org=alice@fwd.example",
         "srs0=abcd=tt=example.org=alice@fwd.example"),
        ("a.1.b@example.org", "a.#.b@example.org"),
        ("postmaster", "postmaster"),  # no domain
        ("prvs=tag=", "prvs=tag="),  # nothing after the tag: not BATV
        ("x@2001.example", "x@2001.example"),  # the domain is not folded
    ],
)
def test_normalise_sender(sender: str, expected: str) -> None:
    assert normalise_sender(sender) == expected


@pytest.mark.parametrize(
    ("ip", "cfg", "spf_domain", "expected"),
    [
        ("192.0.2.77", CFG, "", "192.0.2.0/24"),
        ("192.0.2.77", replace(CFG, ipv4_prefix=16), "", "192.0.0.0/16"),
        ("192.0.2.77", replace(CFG, key="ip"), "", "192.0.2.77"),
        ("2001:db8:1:2:3:4:5:6", CFG, "", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", replace(CFG, ipv6_prefix=48), "", "2001:db8:1::/48"),
        ("2001:db8:1:2:3:4:5:6", replace(CFG, key="ip"), "", "2001:db8:1:2:3:4:5:6"),
        ("::ffff:192.0.2.77", CFG, "", "192.0.2.0/24"),  # IPv4-mapped: the IPv4 client
        ("192.0.2.77", replace(CFG, key="spf-domain"), "Example.ORG.", "example.org"),
        ("192.0.2.77", replace(CFG, key="spf-domain"), "", "192.0.2.0/24"),  # no SPF pass
        ("192.0.2.77", CFG, "example.org", "192.0.2.0/24"),  # key = net ignores the domain
    ],
)
def test_client_key(ip: str, cfg: GreylistConfig, spf_domain: str, expected: str) -> None:
    assert client_key(ipaddress.ip_address(ip), cfg, spf_domain) == expected


@pytest.mark.parametrize(
    ("rcpt", "entries", "expected"),
    [
        ("bob@example.com", ("bob@example.com",), True),
        ("Bob@Example.com", ("bob@example.com",), True),
        ("bob+x@example.com", ("bob@example.com",), True),
        ("bobby@example.com", ("bob@example.com",), False),
        ("bob@example.net", ("bob@example.com",), False),
        ("anyone@example.com", ("@example.com",), True),
        ("anyone@sub.example.com", ("@example.com",), False),
        ("abuse@whatever.example", ("abuse@",), True),
        ("abuse+x@whatever.example", ("abuse@",), True),
        ("postmaster", ("postmaster@",), True),
        ("carol@example.com", ("bob@example.com", "@example.org"), False),
        ("carol@example.org", ("bob@example.com", "@example.org"), True),
        ("carol@example.org", (), False),
    ],
)
def test_rcpt_exempt(rcpt: str, entries: tuple[str, ...], expected: bool) -> None:
    assert rcpt_exempt(rcpt, entries) is expected


NETS = (ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("2001:db8:feed::/48"))


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, ""),
        ({"relay_client": True}, "relay client"),
        ({"auth_user": "alice"}, "authenticated"),
        ({"ip": "198.51.100.9"}, "exempt client"),
        ({"ip": "::ffff:198.51.100.9"}, "exempt client"),
        ({"ip": "2001:db8:feed:1::5"}, "exempt client"),
        ({"ip": "2001:db8:beef::5"}, ""),
        ({"rcpt": "x@exempt.example"}, "exempt recipient"),
        ({"sender": ""}, ""),  # default: bounces are greylisted
        ({"sender": "", "null_sender": "exempt"}, "null sender"),
        ({"sender": "a@b.example", "null_sender": "exempt"}, ""),
    ],
)
def test_exemption(kw: dict[str, object], expected: str) -> None:
    cfg = replace(CFG, exempt_rcpts=("@exempt.example",),
                  null_sender=str(kw.get("null_sender", "greylist")))  # type: ignore[arg-type]
    got = exemption(
        ip=ipaddress.ip_address(str(kw.get("ip", "192.0.2.1"))),
        relay_client=bool(kw.get("relay_client", False)),
        auth_user=str(kw.get("auth_user", "")),
        sender=str(kw.get("sender", "a@example.org")),
        rcpt=str(kw.get("rcpt", "b@example.com")),
        cfg=cfg,
        exempt_nets=NETS,
    )
    assert got == expected


def pending(first: float, last: float | None = None, deferrals: int = 1) -> TripletState:
    return TripletState(first, first if last is None else last, None, deferrals)


def passed(first: float, at: float) -> TripletState:
    return TripletState(first, at, at, 1)


# (name, entry, client, now, cfg) -> (result, wait_s, delayed_s, new entry, new client)
DECIDE_CASES: list[tuple[str, TripletState | None, ClientState | None, float, GreylistConfig,
                         tuple[Result, int, int | None, TripletState | None,
                               ClientState | None]]] = [
    ("first try", None, None, T0, CFG,
     (Result.DEFERRED, 300, None, TripletState(T0, T0, None, 1), None)),
    ("retry after 10 s", pending(T0), None, T0 + 10, CFG,
     (Result.DEFERRED, 290, None, TripletState(T0, T0 + 10, None, 2), None)),
    ("retry after 299.5 s rounds up", pending(T0), None, T0 + 299.5, CFG,
     (Result.DEFERRED, 1, None, TripletState(T0, T0 + 299.5, None, 2), None)),
    ("retry exactly at the delay", pending(T0), None, T0 + 300, CFG,
     (Result.PASSED, 0, 300, TripletState(T0, T0 + 300, T0 + 300, 1),
      ClientState(1, T0 + 300, T0 + 300))),
    ("retry after an hour", pending(T0, T0 + 60, 3), None, T0 + H, CFG,
     (Result.PASSED, 0, 3600, TripletState(T0, T0 + H, T0 + H, 3),
      ClientState(1, T0 + H, T0 + H))),
    ("retry on the window's edge", pending(T0), None, T0 + 48 * H, CFG,
     (Result.PASSED, 0, 172800, TripletState(T0, T0 + 48 * H, T0 + 48 * H, 1),
      ClientState(1, T0 + 48 * H, T0 + 48 * H))),
    ("retry after the window: a new first try", pending(T0, T0 + 10, 2), None,
     T0 + 48 * H + 1, CFG,
     (Result.DEFERRED, 300, None, TripletState(T0 + 48 * H + 1, T0 + 48 * H + 1, None, 1),
      None)),
    ("passed triplet passes at once, no header", passed(T0, T0 + 400), None, T0 + 5 * D, CFG,
     (Result.PASSED, 0, None, TripletState(T0, T0 + 5 * D, T0 + 400, 1), None)),
    ("passed triplet seen within the hour: nothing to write", passed(T0, T0 + 400), None,
     T0 + 400 + H - 1, CFG,
     (Result.PASSED, 0, None, None, None)),
    ("passed triplet touched once an hour", passed(T0, T0 + 400), None, T0 + 400 + H, CFG,
     (Result.PASSED, 0, None, TripletState(T0, T0 + 400 + H, T0 + 400, 1), None)),
    ("passed triplet unseen for max_age is forgotten", passed(T0, T0 + 400), None,
     T0 + 400 + 35 * D + 1, CFG,
     (Result.DEFERRED, 300, None,
      TripletState(T0 + 400 + 35 * D + 1, T0 + 400 + 35 * D + 1, None, 1), None)),
    ("passed triplet seen within max_age stays", passed(T0, T0 + 400), None,
     T0 + 400 + 35 * D, CFG,
     (Result.PASSED, 0, None, TripletState(T0, T0 + 400 + 35 * D, T0 + 400, 1), None)),
    ("pass counted for a known client after an hour", pending(T0), ClientState(2, T0 - D, T0 - H),
     T0 + 300, CFG,
     (Result.PASSED, 0, 300, TripletState(T0, T0 + 300, T0 + 300, 1),
      ClientState(3, T0 - D, T0 + 300))),
    ("second pass within the hour not counted", pending(T0), ClientState(2, T0 - D, T0),
     T0 + 300, CFG,
     (Result.PASSED, 0, 300, TripletState(T0, T0 + 300, T0 + 300, 1), None)),
    ("whitelisted client skips the triplet", None, ClientState(5, T0 - D, T0 - 2 * H), T0, CFG,
     (Result.WHITELISTED, 0, None, None, ClientState(5, T0 - D, T0))),
    ("whitelisted client touched at most hourly", None, ClientState(7, T0 - D, T0 - 60), T0, CFG,
     (Result.WHITELISTED, 0, None, None, None)),
    ("4 passes are not enough", None, ClientState(4, T0 - D, T0 - 2 * H), T0, CFG,
     (Result.DEFERRED, 300, None, TripletState(T0, T0, None, 1), None)),
    ("auto-whitelist off: no client state", pending(T0), ClientState(9, T0 - D, T0 - D),
     T0 + 300, replace(CFG, auto_whitelist_after=0),
     (Result.PASSED, 0, 300, TripletState(T0, T0 + 300, T0 + 300, 1), None)),
    ("custom delay", None, None, T0, replace(CFG, delay_s=60),
     (Result.DEFERRED, 60, None, TripletState(T0, T0, None, 1), None)),
    ("custom window", pending(T0), None, T0 + 2 * H, replace(CFG, retry_window_h=1),
     (Result.DEFERRED, 300, None, TripletState(T0 + 2 * H, T0 + 2 * H, None, 1), None)),
]


@pytest.mark.parametrize(
    ("entry", "client", "now", "cfg", "expected"),
    [c[1:] for c in DECIDE_CASES],
    ids=[c[0] for c in DECIDE_CASES],
)
def test_decide(entry: TripletState | None, client: ClientState | None, now: float,
                cfg: GreylistConfig,
                expected: tuple[Result, int, int | None, TripletState | None,
                                ClientState | None]) -> None:
    d = decide(entry, client, now, cfg)
    assert (d.result, d.wait_s, d.delayed_s, d.entry, d.client) == expected


def test_verdicts() -> None:
    deferred = decide(None, None, T0, CFG).verdict
    assert deferred.action is Action.TEMPFAIL
    assert deferred.reply is not None
    assert str(deferred.reply) == "451 4.7.1 Greylisted, please try again in 300 seconds"
    assert deferred.reason == "greylisted: first try"
    assert str(deferral_reply(1)) == "451 4.7.1 Greylisted, please try again in 1 second"
    ok = decide(pending(T0), None, T0 + 310, CFG)
    assert ok.verdict.action is Action.CONTINUE and ok.verdict.reply is None
    assert ok.verdict.reason == "greylist passed after 310s"
    white = Decision(Result.WHITELISTED, reason="w")
    assert white.verdict.action is Action.CONTINUE


def test_header_format() -> None:
    assert header(312, "0.1.0", 1_800_000_000.0) == (
        "X-Greylist: delayed 312 seconds by mailguard-0.1.0; Fri, 15 Jan 2027 08:00:00 GMT"
    )


@pytest.mark.parametrize(
    ("text", "cfg", "expected"),
    [
        ("192.0.2.7", CFG, "192.0.2.0/24"),
        ("192.0.2.0/24", CFG, "192.0.2.0/24"),
        ("192.0.2.9/24", CFG, "192.0.2.0/24"),
        ("2001:db8::1", CFG, "2001:db8::/64"),
        ("192.0.2.7", replace(CFG, key="ip"), "192.0.2.7"),
        ("192.0.2.7/32", replace(CFG, key="ip"), "192.0.2.7/32"),
        ("Example.ORG", replace(CFG, key="spf-domain"), "example.org"),
        ("192.0.2.7", replace(CFG, key="spf-domain"), "192.0.2.0/24"),
    ],
)
def test_allow_key(text: str, cfg: GreylistConfig, expected: str) -> None:
    assert allow_key(text, cfg) == expected


@pytest.mark.parametrize(
    ("text", "cfg", "message"),
    [
        ("10.0.0.0/16", CFG, "keys clients on /24"),
        ("example.org", CFG, "domains are keys only with"),
        ("not/a/net", CFG, "not an IP address or network"),
        ("a..b", replace(CFG, key="spf-domain"), "not a domain"),
    ],
)
def test_allow_key_refused(text: str, cfg: GreylistConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        allow_key(text, cfg)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"delay_s": -1}, "greylist.delay_s"),
        ({"retry_window_h": 0}, "greylist.retry_window_h"),
        ({"delay_s": 7200, "retry_window_h": 2}, "greylist.retry_window_h"),
        ({"ipv4_prefix": 33}, "greylist.ipv4_prefix"),
        ({"ipv6_prefix": 8}, "greylist.ipv6_prefix"),
        ({"exempt_clients": ["nonsense"]}, "greylist.exempt_clients"),
        ({"exempt_rcpts": ["nobody"]}, "greylist.exempt_rcpts"),
        ({"key": "helo"}, "greylist.key"),
        ({"null_sender": "reject"}, "greylist.null_sender"),
        ({"delay": 300}, "greylist.delay"),
    ],
)
def test_config_refuses(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(GreylistConfig, data, "t.toml", "greylist")
    assert info.value.key == key


def test_config_defaults_are_postgrey_s() -> None:
    cfg = build(GreylistConfig, {}, "t.toml", "greylist")
    assert (cfg.delay_s, cfg.retry_window_h, cfg.max_age_d, cfg.auto_whitelist_after,
            cfg.ipv4_prefix, cfg.ipv6_prefix, cfg.key, cfg.null_sender) == (
        300, 48, 35, 5, 24, 64, "net", "greylist")
