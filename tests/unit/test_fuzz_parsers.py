"""Fuzzing of the parsers that read untrusted bytes (issue #12): the qmail-queue envelope,
the control-socket protocol, the qmail control files and cdb, MAIL/RCPT arguments.

Each parser may fail only with its documented error type, and round-trips where an
encoder exists. CI runs a few hundred examples; MAILGUARD_FUZZ_EXAMPLES raises that."""

from __future__ import annotations

import contextlib
import os
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailguard.control import protocol
from mailguard.errors import ConfigError
from mailguard.qmail import envelope
from mailguard.qmail.address import AddressError, parse_path
from mailguard.qmail.cdb import CdbError, CdbReader, build_cdb
from mailguard.qmail.control import WATCHED, read_control
from tests.fuzzing import fuzz_settings, timeout_s

CI_EXAMPLES = 300
FUZZ = fuzz_settings(CI_EXAMPLES)
pytestmark = pytest.mark.timeout(timeout_s(CI_EXAMPLES, 0.05))

address = st.binary(max_size=40).filter(lambda b: b"\0" not in b)


# --- envelope (qmail-queue.c's fd 1) --------------------------------------------------------

@FUZZ
@given(st.binary(max_size=2200))
def test_envelope_parse_raises_only_envelope_error_with_a_qmail_status(data: bytes) -> None:
    try:
        env = envelope.parse(data)
    except envelope.EnvelopeError as exc:
        assert exc.exit_code in (11, 54, 91)
        return
    # Whatever parsed is exactly the prefix up to the final NUL, re-encoded.
    encoded = env.encode()
    assert data.startswith(encoded)


@FUZZ
@given(address, st.lists(address, max_size=6))
def test_envelope_round_trips(sender: bytes, rcpts: list[bytes]) -> None:
    data = envelope.encode(sender, rcpts)
    assert envelope.parse(data) == envelope.Envelope(sender, tuple(rcpts))
    # str helpers round-trip any bytes (surrogateescape)
    env = envelope.Envelope.of(sender, rcpts)
    assert envelope.Envelope.of(env.sender_str, env.rcpts_str) == env


@FUZZ
@given(address, st.lists(address, min_size=1, max_size=4), st.data())
def test_every_truncated_envelope_is_refused_with_54(sender: bytes, rcpts: list[bytes],
                                                     data: st.DataObject) -> None:
    full = envelope.encode(sender, rcpts)
    cut = data.draw(st.integers(min_value=0, max_value=len(full) - 1))
    try:
        envelope.parse(full[:cut])
    except envelope.EnvelopeError as exc:
        assert exc.exit_code == 54
    else:
        raise AssertionError(f"truncated envelope {full[:cut]!r} was accepted")


# --- control socket protocol ---------------------------------------------------------------

# Environment values as os.environ holds them: bytes decoded with surrogateescape.
env_text = st.binary(max_size=30).map(lambda b: b.decode("utf-8", "surrogateescape"))
scalar = st.one_of(env_text, st.integers(-(10**12), 10**12), st.booleans(), st.none())
json_obj = st.recursive(
    st.dictionaries(env_text, scalar, max_size=5),
    lambda inner: st.dictionaries(env_text, st.one_of(scalar, inner), max_size=4),
    max_leaves=20,
)


@FUZZ
@given(json_obj)
def test_control_protocol_round_trips(obj: dict[str, object]) -> None:
    line = protocol.encode(obj)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert protocol.decode(line) == obj


@FUZZ
@given(st.binary(max_size=300))
def test_control_protocol_decode_raises_only_protocol_error(data: bytes) -> None:
    try:
        obj = protocol.decode(data)
    except protocol.ProtocolError:
        return
    assert isinstance(obj, dict)


@FUZZ
@given(json_obj, st.data())
def test_control_protocol_mutated_lines_raise_only_protocol_error(
    obj: dict[str, object], data: st.DataObject
) -> None:
    line = bytearray(protocol.encode(obj))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(line) - 1))
        line[pos] = data.draw(st.sampled_from(b'{}[]:,"\\-0123456789tfnx \x00\xff'))
    with contextlib.suppress(protocol.ProtocolError):
        protocol.decode(bytes(line))


def test_control_protocol_deep_nesting_is_a_protocol_error() -> None:
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    with contextlib.suppress(protocol.ProtocolError):
        protocol.decode(deep)


# --- cdb -------------------------------------------------------------------------------------

@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=20)), max_size=30))
def test_cdb_round_trips_with_duplicates_in_order(items: list[tuple[bytes, bytes]]) -> None:
    reader = CdbReader(build_cdb(items))
    assert list(reader.items()) == items
    for key in {k for k, _ in items}:
        assert list(reader.get_all(key)) == [v for k, v in items if k == key]
        assert key in reader
    absent = b"\xff" * 13  # longer than any key drawn
    assert reader.get(absent) is None and absent not in reader


@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8)), max_size=10),
       st.data())
def test_corrupt_cdb_raises_only_cdb_error(items: list[tuple[bytes, bytes]],
                                           data: st.DataObject) -> None:
    raw = bytearray(build_cdb(items))
    how = data.draw(st.sampled_from(["flip", "truncate", "random"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    elif how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    else:
        raw = bytearray(data.draw(st.binary(min_size=0, max_size=2200)))
    probe = data.draw(st.binary(max_size=8))
    try:
        reader = CdbReader(bytes(raw))
        list(reader.items())
        list(reader.get_all(probe))
        for k, _ in items:
            reader.get(k)
    except CdbError:
        pass


# --- qmail control files -------------------------------------------------------------------

control_files = st.dictionaries(
    st.sampled_from((*WATCHED, "defaultdomain", "plusdomain", "morercpthosts")),
    st.one_of(st.binary(max_size=60),
              st.text(alphabet="0123456789 \t\n#.abc-", max_size=30).map(str.encode)),
    max_size=6,
)


@FUZZ
@given(control_files)
def test_read_control_raises_only_config_error(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        for name, content in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(content)
        try:
            ctl = read_control(d)
        except ConfigError as exc:
            assert exc.key in files  # the error names the file at fault
            return
        assert ctl.timeoutsmtpd >= 1
        for entry in (*(ctl.rcpthosts or ()), *ctl.badmailfrom):
            assert entry and not entry.startswith("#") and entry == entry.rstrip(" \t\n")


# --- MAIL / RCPT arguments (qmail-smtpd's addrparse) ---------------------------------------

@FUZZ
@given(st.text(max_size=120), st.sampled_from(["mail", "rcpt"]), st.booleans())
def test_parse_path_raises_only_address_error(arg: str, kind: str, strict: bool) -> None:
    try:
        path = parse_path(arg, kind="mail" if kind == "mail" else "rcpt",
                          strict_params=strict, local_ips=["127.0.0.1"],
                          localiphost="mx.test")
    except AddressError as exc:
        assert exc.reply.code in (555, 501, 553)
        return
    assert len(path.address.encode("utf-8", "surrogateescape")) <= 899
    assert "\0" not in path.address
