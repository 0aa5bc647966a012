"""The control socket's framing and the lean processes' pure decisions."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from mailguard.config import load
from mailguard.control import protocol
from mailguard.control.environ import qmail_ulong
from mailguard.control.queueop import exit_status
from mailguard.delivery.base import Delivered
from mailguard.errors import ConfigError
from mailguard.lean import settings as lean_settings
from mailguard.settings.control import DEFAULT_CONTROL_SOCKET
from mailguard.verdict import Reply


@pytest.mark.parametrize(
    "obj",
    [
        {"v": 1, "op": "smtp", "env": {"TCPREMOTEIP": "127.0.0.1", "RELAYCLIENT": ""}},
        {"exit": 82, "text": "Dno thanks \"quoted\" \\ back\nslash"},
        {"done": True, "n": -5, "nothing": None, "f": False, "nested": {"a": {"b": "c"}}},
        {"env": {"ODD": "caf\udce9 \u00e9 \x00 \x1f"}},  # surrogate escape, NUL, control
        {},
    ],
)
def test_encode_decode_round_trip_and_is_json(obj: dict[str, object]) -> None:
    line = protocol.encode(obj)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert protocol.decode(line[:-1]) == obj
    assert json.loads(line) == obj  # the daemon side could use the json module too


@pytest.mark.parametrize(
    "line", [b"", b"[1]", b'{"a":1', b'{"a" 1}', b'{"a":1}x', b"{a:1}", b'{"a":1.5}', b"\xff"]
)
def test_decode_refuses_malformed(line: bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(line)


def test_request_with_descriptors_over_a_socketpair(tmp_path: Path) -> None:
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        env = {"X": "y" * 200_000}  # several recvmsg calls
        protocol.send_request(a, {"v": 1, "op": "queue", "env": env}, [r, w])
        buf = b""
        fds: list[int] = []
        while not buf.endswith(b"\n"):
            data, anc, _flags, _ = b.recvmsg(65536, protocol.ANCILLARY_SPACE)
            fds += protocol.unpack_fds(anc)
            buf += data
        assert protocol.decode(buf[:-1])["env"] == env
        assert len(fds) == 2
        os.write(w, b"through the copy")
        assert os.read(fds[0], 100) == b"through the copy"
        for fd in fds:
            os.close(fd)
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


PERM = Reply(554, "virus found: Eicar-Test-Signature", "5.7.1")
TEMP = Reply(451, "scanner unavailable", "4.3.0")
QQ_PERM = Reply(554, "mail server permanently rejected message (#5.3.0)")


@pytest.mark.parametrize(
    ("delivered", "custom", "expected"),
    [
        (Delivered(True, Reply(250, "ok 1 qp 2"), "2", 0), True, (0, "")),
        (Delivered(True, Reply(250, "ok")), False, (0, "")),
        # the inner qmail-queue's own status passes unchanged
        (Delivered(False, QQ_PERM, exit_code=31), True, (31, "")),
        (Delivered(False, Reply(451, "qq read error (#4.3.0)"), exit_code=54), True, (54, "")),
        (Delivered(False, Reply(451, "unable to exec qq (#4.3.0)"), exit_code=120), False,
         (120, "")),
        # its 82 travels on with its text, or degrades to 31/71 without fd 6
        (Delivered(False, Reply(554, "no thanks"), exit_code=82), True, (82, "Dno thanks")),
        (Delivered(False, Reply(451, "later"), exit_code=82), False, (71, "")),
        # statuses a process cannot exit with: killed by a signal, waitpid surprise
        (Delivered(False, Reply(451, "qq crashed (#4.3.0)"), exit_code=-9), True,
         (82, "Zqq crashed (#4.3.0)")),
        (Delivered(False, Reply(451, "qq crashed (#4.3.0)"), exit_code=-9), False, (71, "")),
        (Delivered(False, Reply(451, "x"), exit_code=256), False, (71, "")),
        # mailguard's own refusals (no exit status)
        (Delivered(False, PERM), True, (82, "D5.7.1 virus found: Eicar-Test-Signature")),
        (Delivered(False, PERM), False, (31, "")),
        (Delivered(False, TEMP), True, (82, "Z4.3.0 scanner unavailable")),
        (Delivered(False, TEMP), False, (71, "")),
        (Delivered(False, Reply(554, "two\nlines")), True, (82, "Dtwo\nlines")),
    ],
)
def test_exit_status(delivered: Delivered, custom: bool, expected: tuple[int, str]) -> None:
    assert exit_status(delivered, custom=custom) == expected


@pytest.mark.parametrize(
    ("text", "value"), [("100", 100), ("0", 0), ("", 0), ("abc", 0), ("12ab", 12), (" 5", 0),
                        ("٣", 0)],
)
def test_databytes_reads_like_scan_ulong(text: str, value: int) -> None:
    assert qmail_ulong(text) == value


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[control]\nsocket = "/a/b.sock"\n', "/a/b.sock"),
        ("[control]\nsocket = '/a/b.sock'  # comment\n", "/a/b.sock"),
        ('[ control ]\nenabled = true\nsocket="/c.sock"\n[server]\nsocket = "/no"\n', "/c.sock"),
        ('[server]\nqmail_control_dir = "/var/qmail/control"\n', DEFAULT_CONTROL_SOCKET),
        ('[server]\nlisten = [\n  "127.0.0.1:25",\n]\n[control]\nsocket = "/d.sock"\n',
         "/d.sock"),
        # forms the line scan leaves to tomllib
        ('control = { socket = "/inline.sock" }\n', "/inline.sock"),
        ('control.socket = "/dotted.sock"\n', "/dotted.sock"),
        ('[control]\nsocket = "/esc\\u0061pe.sock"\n', "/escape.sock"),
        ("", DEFAULT_CONTROL_SOCKET),
        ("[control\nbroken", DEFAULT_CONTROL_SOCKET),
    ],
)
def test_lean_finds_the_control_socket(tmp_path: Path, toml: str, expected: str) -> None:
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text(toml)
    assert lean_settings.control_socket({"MAILGUARD_CONFIG": str(cfg)}) == expected


def test_lean_socket_from_environment_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text('[control]\nsocket = "/from/file"\n')
    env = {"MAILGUARD_CONFIG": str(cfg), "MAILGUARD_CONTROL": "/from/env"}
    assert lean_settings.control_socket(env) == "/from/env"
    assert lean_settings.DEFAULT_CONTROL_SOCKET == DEFAULT_CONTROL_SOCKET


@pytest.mark.parametrize(
    ("toml", "me", "expected"),
    [
        ('[server]\nhostname = "mx.test"\n', "ignored.test\n", "mx.test"),
        ('[server]\nqmail_control_dir = "{ctl}"\n', "me.test \t\nsecond\n", "me.test"),
        ('[server]\nqmail_control_dir = "{ctl}"\n', None, "localhost"),
        ('[server]\nhostname = "bad\\r\\nhost"\n', None, "bad??host"),
    ],
)
def test_lean_hostname_for_the_421(tmp_path: Path, toml: str, me: str | None,
                                   expected: str) -> None:
    ctl = tmp_path / "control"
    ctl.mkdir()
    if me is not None:
        (ctl / "me").write_text(me)
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text(toml.replace("{ctl}", str(ctl)))
    assert lean_settings.hostname({"MAILGUARD_CONFIG": str(cfg)}) == expected


def test_lean_hostname_falls_back_to_tcplocalhost(tmp_path: Path) -> None:
    """No control/me where it looks (e.g. the configuration is unreadable for qmaild and
    qmail lives elsewhere): the name tcpserver was given with -l, before "localhost"."""
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text(f'[server]\nqmail_control_dir = "{tmp_path}"\n')
    env = {"MAILGUARD_CONFIG": str(cfg), "TCPLOCALHOST": "mx.test"}
    assert lean_settings.hostname(env) == "mx.test"
    (tmp_path / "me").write_text("me.test\n")
    assert lean_settings.hostname(env) == "me.test"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[control]\nsocket = "relative.sock"\n', "control.socket"),
        (f'[control]\nsocket = "/{"x" * 120}"\n', "control.socket"),
        ("[control]\nsocket_mode = 0o1777\n", "control.socket_mode"),
        ("[control]\nsocket_mode = \"660\"\n", "control.socket_mode"),
        ("[queue]\ndeadline_s = 0\n", "queue.deadline_s"),
        ("[queue]\nfd6 = true\n", "queue.fd6"),
    ],
)
def test_control_and_queue_settings_are_validated(tmp_path: Path, toml: str, key: str) -> None:
    cfg = tmp_path / "mailguard.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert info.value.key == key
