"""The qmail-queue envelope codec, checked against qmail-queue.c's reading rules."""

from __future__ import annotations

import pytest

from mailguard.qmail.envelope import ADDR_MAX, Envelope, EnvelopeError, encode, parse

LONG = b"a" * (ADDR_MAX - 1)  # the longest address qmail-queue accepts (1002 bytes)
TOO_LONG = b"a" * ADDR_MAX


@pytest.mark.parametrize(
    ("sender", "rcpts", "wire"),
    [
        ("a@b.example", ["c@d.example"], b"Fa@b.example\0Tc@d.example\0\0"),
        ("", ["postmaster@x.example"], b"F\0Tpostmaster@x.example\0\0"),  # null sender
        ("a@b", ["x@y", "z@w"], b"Fa@b\0Tx@y\0Tz@w\0\0"),
        ("a@b", [], b"Fa@b\0\0"),  # qmail-queue accepts no recipients
        (b"\xe9t\xe9@b", [b"\xff@y"], b"F\xe9t\xe9@b\0T\xff@y\0\0"),  # 8-bit bytes kept
        ("jörg@b", ["ü@y"], "Fjörg@b\0Tü@y\0\0".encode()),  # str → UTF-8
    ],
)
def test_encode_and_parse_round_trip(
    sender: str | bytes, rcpts: list[str | bytes], wire: bytes
) -> None:
    assert encode(sender, rcpts) == wire
    env = parse(wire)
    assert env == Envelope.of(sender, rcpts)
    assert env.encode() == wire


@pytest.mark.parametrize(
    ("wire", "exit_code"),
    [
        (b"", 54),  # empty envelope
        (b"X\0\0", 91),  # first byte not F
        (b"Ta@b\0\0", 91),
        (b"Fa@b\0Xc@d\0\0", 91),  # recipient without T
        (b"Fa@b\0Tc@d\0Xe@f\0\0", 91),  # a later recipient without T
        (b"F", 54),  # EOF at the start of the sender
        (b"Fa@b", 54),  # EOF inside the sender
        (b"Fa@b\0", 54),  # no recipients and no final NUL
        (b"Fa@b\0Tc@d", 54),  # EOF inside a recipient
        (b"Fa@b\0Tc@d\0", 54),  # missing final NUL
        (b"F" + TOO_LONG + b"\0\0", 11),  # sender of 1003 bytes
        (b"Fa@b\0T" + TOO_LONG + b"\0\0", 11),  # recipient of 1003 bytes
        (b"F" + TOO_LONG, 11),  # too long wins over EOF: qmail-queue stops at 1003 bytes
        (b"F" + LONG, 54),  # 1002 bytes then EOF: a read error
    ],
)
def test_parse_errors_carry_qmail_queue_exit_codes(wire: bytes, exit_code: int) -> None:
    with pytest.raises(EnvelopeError) as err:
        parse(wire)
    assert err.value.exit_code == exit_code
    assert isinstance(err.value, ValueError)


def test_longest_addresses_are_accepted() -> None:
    env = parse(b"F" + LONG + b"\0T" + LONG + b"\0\0")
    assert env.sender == LONG
    assert env.rcpts == (LONG,)


def test_bytes_after_final_nul_are_ignored_like_qmail_queue() -> None:
    assert parse(b"Fa@b\0Tc@d\0\0garbage") == Envelope(b"a@b", (b"c@d",))


def test_str_helpers_round_trip_any_bytes() -> None:
    env = Envelope(b"\xff\xfe@b", (b"ok@y", b"\xe9@z"))
    assert env.sender_str.encode("utf-8", "surrogateescape") == b"\xff\xfe@b"
    assert Envelope.of(env.sender_str, env.rcpts_str) == env
    assert Envelope.of("jörg@b", []).sender == "jörg@b".encode()


@pytest.mark.parametrize(("sender", "rcpts"), [("a\0b@c", ["x@y"]), ("a@b", ["x@y", "x\0@y"])])
def test_encode_refuses_nul_inside_an_address(sender: str, rcpts: list[str]) -> None:
    with pytest.raises(ValueError, match="NUL"):
        encode(sender, rcpts)
