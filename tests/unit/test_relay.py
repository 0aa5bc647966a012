"""The relay decision: rcpthosts, the classic relay tricks, relay clients."""

from __future__ import annotations

import pytest

from mailguard.qmail.address import parse_path
from mailguard.qmail.relay import ALLOWED, check_rcpt, qualify
from mailguard.qmail.replies import NOT_RCPTHOSTS, RELAY_TRICK, SYNTAX
from mailguard.verdict import Reply


def is_local(domain: str) -> bool:
    """rcpthosts = example.com plus, like a leading-dot entry, its subdomains."""
    return domain == "example.com" or domain.endswith(".example.com")


# (recipient as parse_path returns it, reply when not a relay client; None = accepted)
CASES: list[tuple[str, Reply | None]] = [
    ("u@example.com", None),
    ("u@EXAMPLE.COM", None),
    ("U@Example.Com", None),
    ("u@mail.example.com", None),
    ("u@a.b.example.com", None),
    ("postmaster", None),  # no domain: qmail appends its own
    ("u+ext@example.com", None),
    ("first.last@example.com", None),
    ("u-x=y@example.com", None),
    # foreign domains
    ("u@foreign.test", NOT_RCPTHOSTS),
    ("u@notexample.com", NOT_RCPTHOSTS),
    ("u@example.com.foreign.test", NOT_RCPTHOSTS),
    ("u@example.co", NOT_RCPTHOSTS),
    # trailing dot and empty domain: never matched, never stripped
    ("u@example.com.", NOT_RCPTHOSTS),
    ("u@EXAMPLE.COM.", NOT_RCPTHOSTS),
    ("u@mail.example.com.", NOT_RCPTHOSTS),
    ("u@", NOT_RCPTHOSTS),
    ("u@.", NOT_RCPTHOSTS),
    # IP literals are not in rcpthosts unless rewritten to localiphost before
    ("u@[192.0.2.1]", NOT_RCPTHOSTS),
    ("u@[127.0.0.1]", NOT_RCPTHOSTS),
    # the percent hack, bang paths, embedded '@', source-route leftovers
    ("u%foreign.test@example.com", RELAY_TRICK),
    ("u%foreign.test%example.com@example.com", RELAY_TRICK),
    ("foreign.test!u@example.com", RELAY_TRICK),
    ("u@foreign.test@example.com", RELAY_TRICK),  # "u@foreign"@local after unquoting
    ("@example.com:u@foreign.test@example.com", RELAY_TRICK),
    ("u:x@example.com", RELAY_TRICK),
    ("u@example.com@foreign.test", NOT_RCPTHOSTS),  # the last '@' decides
    ("u@x%y.example.com", RELAY_TRICK),
    ("u@x!y.example.com", RELAY_TRICK),
    ("u%foreign.test", RELAY_TRICK),  # no domain, would become u%foreign.test@me
    ("foreign.test!u", RELAY_TRICK),
    ("", SYNTAX),
]


@pytest.mark.parametrize(("rcpt", "reply"), CASES)
def test_not_a_relay_client(rcpt: str, reply: Reply | None) -> None:
    decision = check_rcpt(rcpt, relay_allowed=False, is_local_domain=is_local)
    if reply is None:
        assert decision == ALLOWED
        assert decision.allowed
    else:
        assert not decision.allowed
        assert decision.reply == reply
        assert decision.reason


@pytest.mark.parametrize(("rcpt", "reply"), CASES)
def test_relay_client_may_send_anywhere(rcpt: str, reply: Reply | None) -> None:
    assert check_rcpt(rcpt, relay_allowed=True, is_local_domain=is_local).allowed


# (MAIL/RCPT argument from the wire, reply) — parse then decide, as the daemon does
WIRE_CASES: list[tuple[str, Reply | None]] = [
    ('TO:<"u@foreign.test"@example.com>', RELAY_TRICK),
    ('TO:<"u%foreign.test"@example.com>', RELAY_TRICK),
    ("TO:<u\\@foreign.test@example.com>", RELAY_TRICK),
    ("TO:<@example.com,@relay.test:u@foreign.test>", NOT_RCPTHOSTS),  # route stripped
    ("TO:<@foreign.test:u@example.com>", None),
    ("TO:<u@foreign.test> <u@example.com>", NOT_RCPTHOSTS),  # first '<' wins
    ("TO:<postmaster>", None),
    ("TO:<u@example.com.>", NOT_RCPTHOSTS),
]


@pytest.mark.parametrize(("arg", "reply"), WIRE_CASES)
def test_from_the_wire(arg: str, reply: Reply | None) -> None:
    addr = parse_path(arg, kind="rcpt").address
    decision = check_rcpt(addr, relay_allowed=False, is_local_domain=is_local)
    assert decision.reply == reply
    assert decision.allowed is (reply is None)


def test_local_ip_literal_relays_after_rewrite_to_a_local_domain() -> None:
    addr = parse_path(
        "TO:<u@[192.0.2.25]>",
        kind="rcpt",
        local_ips=["192.0.2.25"],
        localiphost="mail.example.com",
    ).address
    assert addr == "u@mail.example.com"
    assert check_rcpt(addr, relay_allowed=False, is_local_domain=is_local).allowed


def test_domain_is_lowered_before_asking() -> None:
    asked: list[str] = []

    def record(domain: str) -> bool:
        asked.append(domain)
        return True

    assert check_rcpt("U@Mail.EXAMPLE.com", relay_allowed=False, is_local_domain=record).allowed
    assert asked == ["mail.example.com"]


def test_relay_client_does_not_consult_rcpthosts() -> None:
    def boom(domain: str) -> bool:
        raise AssertionError("rcpthosts consulted for a relay client")

    assert check_rcpt("u@foreign.test", relay_allowed=True, is_local_domain=boom).allowed


def test_reply_texts() -> None:
    assert str(NOT_RCPTHOSTS) == (
        "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
    )
    assert str(RELAY_TRICK) == (
        "553 sorry, that address is not allowed here: relaying through %, ! or @ is refused"
        " (#5.7.1)"
    )


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("postmaster", "postmaster@example.com"),
        ("u@other.test", "u@other.test"),
        ("u@", "u@"),
    ],
)
def test_qualify(addr: str, expected: str) -> None:
    assert qualify(addr, "example.com") == expected
