"""MAIL/RCPT argument parsing: qmail-smtpd addrparse() cases, ESMTP parameters, limits."""

from __future__ import annotations

import pytest

from mailguard.errors import PermanentError
from mailguard.qmail.address import (
    MAX_ADDRESS_BYTES,
    AddressError,
    Kind,
    Path,
    parse_path,
    rewrite_local_literal,
)
from mailguard.qmail.replies import SYNTAX, UNKNOWN_PARAM
from mailguard.verdict import Reply

# (argument after the verb, kind, expected address, expected params)
ADDRPARSE_CASES: list[tuple[str, Kind, str, dict[str, str]]] = [
    ("FROM:<a@b.test>", "mail", "a@b.test", {}),
    ("FROM: <a@b.test>", "mail", "a@b.test", {}),
    ("from:<A@B.Test>", "mail", "A@B.Test", {}),  # case is kept
    ("TO:<c@d.test>", "rcpt", "c@d.test", {}),
    # the null sender, and qmail's lenient forms of it
    ("FROM:<>", "mail", "", {}),
    ("FROM:", "mail", "", {}),
    ("", "mail", "", {}),  # bare MAIL: qmail answers 250 with <>
    ("a@b.test", "mail", "", {}),  # no '<' and no ':' -> the address is empty
    # no angle brackets: after the first ':', spaces skipped, ends at a space
    ("FROM:a@b.test", "mail", "a@b.test", {}),
    ("FROM:   a@b.test", "mail", "a@b.test", {}),
    ("FROM:a@b.test SIZE=10", "mail", "a@b.test", {"SIZE": "10"}),
    ("TO:c@d.test", "rcpt", "c@d.test", {}),
    # FROM:/TO: is never checked; the first '<' wins wherever it is
    ("<a@b.test>", "mail", "a@b.test", {}),
    ("TO:<a@b.test>", "mail", "a@b.test", {}),
    ("FROM:junk<a@b.test>", "mail", "a@b.test", {}),
    # source routes are stripped up to the first ':'
    ("TO:<@a.test,@b.test:u@d.test>", "rcpt", "u@d.test", {}),
    ("TO:<@a.test:u@d.test>", "rcpt", "u@d.test", {}),
    ("FROM:<@a.test>", "mail", "", {}),  # route without ':' swallows everything
    # quotes are removed, backslash escapes the next character
    ('FROM:<"a b"@d.test>', "mail", "a b@d.test", {}),
    ('TO:<"u@foreign.test"@local.test>', "rcpt", "u@foreign.test@local.test", {}),
    ('FROM:<"a>b"@d.test>', "mail", "a>b@d.test", {}),
    ("FROM:<a\\>b@d.test>", "mail", "a>b@d.test", {}),
    ('FROM:<a\\"b@d.test>', "mail", 'a"b@d.test', {}),
    ("FROM:<a\\\\b@d.test>", "mail", "a\\b@d.test", {}),
    ('FROM:a" "b@d.test', "mail", "a b@d.test", {}),  # quoted space in the bare form
    ("FROM:<a b@d.test>", "mail", "a b@d.test", {}),  # spaces inside <> are kept
    # qmail does not check for the terminator
    ("FROM:<a@b.test", "mail", "a@b.test", {}),
    ('FROM:<"a@b.test>', "mail", "a@b.test>", {}),
    # an embedded NUL ends the C string
    ("FROM:<a@b.test\0evil> SIZE=1", "mail", "a@b.test", {}),
    # domainless recipients
    ("TO:<postmaster>", "rcpt", "postmaster", {}),
    ("TO:<Postmaster>", "rcpt", "Postmaster", {}),
    # ESMTP parameters
    ("FROM:<a@b.test> SIZE=1000", "mail", "a@b.test", {"SIZE": "1000"}),
    (
        "FROM:<a@b.test>  size=1000   body=8bitmime  SMTPUTF8",
        "mail",
        "a@b.test",
        {"SIZE": "1000", "BODY": "8BITMIME", "SMTPUTF8": ""},
    ),
    ("FROM:<a@b.test> BODY=7BIT", "mail", "a@b.test", {"BODY": "7BIT"}),
    ("FROM:<> SIZE=0", "mail", "", {"SIZE": "0"}),
    # unknown parameters are kept but not judged (qmail ignores the rest of the line)
    ("FROM:<a@b.test> AUTH=<>", "mail", "a@b.test", {"AUTH": "<>"}),
    ("TO:<c@d.test> NOTIFY=NEVER", "rcpt", "c@d.test", {"NOTIFY": "NEVER"}),
    ("FROM:<a@b.test>trailing", "mail", "a@b.test", {"TRAILING": ""}),
]


@pytest.mark.parametrize(("arg", "kind", "address", "params"), ADDRPARSE_CASES)
def test_addrparse(arg: str, kind: Kind, address: str, params: dict[str, str]) -> None:
    assert parse_path(arg, kind=kind) == Path(address, params)


# (argument, kind, strict, expected reply)
ERROR_CASES: list[tuple[str, Kind, bool, Reply]] = [
    ("TO:<>", "rcpt", False, SYNTAX),
    ("TO:", "rcpt", False, SYNTAX),
    ("", "rcpt", False, SYNTAX),
    ("c@d.test", "rcpt", False, SYNTAX),  # qmail: empty address
    ("FROM:<a@b.test> SIZE=abc", "mail", False, SYNTAX),
    ("FROM:<a@b.test> SIZE=", "mail", False, SYNTAX),
    ("FROM:<a@b.test> SIZE", "mail", False, SYNTAX),
    ("FROM:<a@b.test> SIZE=-1", "mail", False, SYNTAX),
    ("FROM:<a@b.test> SIZE=" + "9" * 21, "mail", False, SYNTAX),
    ("FROM:<a@b.test> SIZE=\u0661\u0662", "mail", False, SYNTAX),  # non-ASCII digits
    ("FROM:<a@b.test> BODY=BINARYMIME", "mail", False, SYNTAX),
    ("FROM:<a@b.test> BODY=", "mail", False, SYNTAX),
    ("FROM:<a@b.test> SMTPUTF8=yes", "mail", False, SYNTAX),
    ("FROM:<a@b.test> SMTPUTF8=", "mail", False, SYNTAX),
    ("FROM:<a@b.test> FOO=1", "mail", True, UNKNOWN_PARAM),
    ("FROM:<a@b.test> =1", "mail", True, UNKNOWN_PARAM),
    ("FROM:<a@b.test> AUTH=<>", "mail", True, UNKNOWN_PARAM),
    ("TO:<c@d.test> SIZE=10", "rcpt", True, UNKNOWN_PARAM),
    ("TO:<c@d.test> NOTIFY=NEVER", "rcpt", True, UNKNOWN_PARAM),
    ("FROM:<a@b.test> SIZE=1 SIZE=2", "mail", True, SYNTAX),
]


@pytest.mark.parametrize(("arg", "kind", "strict", "reply"), ERROR_CASES)
def test_errors(arg: str, kind: Kind, strict: bool, reply: Reply) -> None:
    with pytest.raises(AddressError) as info:
        parse_path(arg, kind=kind, strict_params=strict)
    assert info.value.reply == reply


def test_strict_accepts_advertised_params() -> None:
    path = parse_path(
        "FROM:<a@b.test> SIZE=5 BODY=8BITMIME SMTPUTF8", kind="mail", strict_params=True
    )
    assert path.params == {"SIZE": "5", "BODY": "8BITMIME", "SMTPUTF8": ""}


def test_syntax_reply_is_qmails() -> None:
    assert str(SYNTAX) == "555 syntax error (#5.5.4)"
    assert issubclass(AddressError, PermanentError)


def _addr_of_bytes(n: int) -> str:
    return "u" * (n - len("@d.test")) + "@d.test"


@pytest.mark.parametrize("kind", ["mail", "rcpt"])
def test_length_limit(kind: Kind) -> None:
    # qmail: `addr.len > 900` with the trailing NUL counted -> 899 bytes is the maximum.
    ok = _addr_of_bytes(MAX_ADDRESS_BYTES)
    assert MAX_ADDRESS_BYTES == 899
    assert parse_path(f"X:<{ok}>", kind=kind).address == ok
    with pytest.raises(AddressError) as info:
        parse_path(f"X:<{_addr_of_bytes(900)}>", kind=kind)
    assert info.value.reply == SYNTAX


def test_length_counts_bytes_not_characters() -> None:
    addr = "\u00e9" * 446 + "@d.test"  # 446 characters of 2 bytes + 7 = 899 bytes
    assert parse_path(f"FROM:<{addr}>", kind="mail").address == addr
    with pytest.raises(AddressError):
        parse_path(f"FROM:<\u00e9{addr}>", kind="mail")


def test_length_is_checked_after_the_local_literal_rewrite() -> None:
    local = "u" * 880
    path = parse_path(
        f"TO:<{local}@[127.0.0.1]>", kind="rcpt", local_ips=["127.0.0.1"], localiphost="x.test"
    )
    assert path.address == f"{local}@x.test"
    with pytest.raises(AddressError):
        parse_path(
            f"TO:<{local}@[127.0.0.1]>",
            kind="rcpt",
            local_ips=["127.0.0.1"],
            localiphost="x" * 30 + ".test",
        )


LOCAL_IPS = ["127.0.0.1", "192.0.2.25", "2001:db8::25", "::ffff:198.51.100.7"]

# (address, expected after rewrite to "mx.example.test")
LITERAL_CASES = [
    ("u@[127.0.0.1]", "u@mx.example.test"),
    ("u@[192.0.2.25]", "u@mx.example.test"),
    ("u@[127.000.000.001]", "u@mx.example.test"),  # ip_scan accepts leading zeros
    ("u@[198.51.100.7]", "u@mx.example.test"),  # listening on a v4-mapped address
    ("u@[IPv6:2001:db8::25]", "u@mx.example.test"),
    ("u@[ipv6:2001:DB8:0::25]", "u@mx.example.test"),
    ("a@[127.0.0.1]@[127.0.0.1]", "a@[127.0.0.1]@mx.example.test"),  # the last '@'
    ("u@[192.0.2.1]", "u@[192.0.2.1]"),  # not ours
    ("u@[127.0.0]", "u@[127.0.0]"),
    ("u@[127.0.0.1.5]", "u@[127.0.0.1.5]"),
    ("u@[383.0.0.1]", "u@[383.0.0.1]"),  # qmail would wrap to 127; we do not
    ("u@[127.0.0.1]x", "u@[127.0.0.1]x"),
    ("u@x[127.0.0.1]", "u@x[127.0.0.1]"),
    ("u@[2001:db8::25]", "u@[2001:db8::25]"),  # RFC 5321 needs the IPv6: tag
    ("u@[IPv6:zz::1]", "u@[IPv6:zz::1]"),
    ("u@[]", "u@[]"),
    ("[127.0.0.1]", "[127.0.0.1]"),  # no '@'
    ("u@127.0.0.1", "u@127.0.0.1"),
]


@pytest.mark.parametrize(("addr", "expected"), LITERAL_CASES)
def test_rewrite_local_literal(addr: str, expected: str) -> None:
    assert rewrite_local_literal(addr, LOCAL_IPS, "mx.example.test") == expected


def test_parse_path_rewrites_only_with_localiphost() -> None:
    arg = "TO:<u@[127.0.0.1]>"
    assert parse_path(arg, kind="rcpt", local_ips=["127.0.0.1"]).address == "u@[127.0.0.1]"
    got = parse_path(arg, kind="rcpt", local_ips=["127.0.0.1"], localiphost="mx.test")
    assert got.address == "u@mx.test"


def test_bad_local_ip_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        rewrite_local_literal("u@[127.0.0.1]", ["not-an-ip"], "x.test")
