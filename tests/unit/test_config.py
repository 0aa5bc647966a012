"""The strict configuration loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailguard.config import Config, load, to_toml
from mailguard.errors import ConfigError
from mailguard.policy import Mode, OnError
from mailguard.settings.base import parse_hostport


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mg.toml"
    p.write_text(text)
    return p


def test_defaults_without_a_file() -> None:
    c = load(None)
    assert c.server.listen == ("127.0.0.1:2525",)
    assert c.server.hostname == "localhost" and c.server.greeting == "localhost"
    assert c.server.databytes == 0 and c.server.timeout_s == 1200
    assert c.delivery.method == "maildir"
    assert c.store.url.startswith("sqlite+aiosqlite:///")


def test_overrides_replace_file_values(tmp_path: Path) -> None:
    p = write(tmp_path, '[server]\nlisten = ["0.0.0.0:25"]\nlocal_domains = ["a.test"]\n')
    c = load(p, {"server": {"listen": ["127.0.0.1:0"]}, "store": {"url": "sqlite:///x.db"}})
    assert c.server.listen == ("127.0.0.1:0",)
    assert c.server.local_domains == ("a.test",)
    assert c.store.url == "sqlite:///x.db"
    assert c.source == str(p)


def test_checks_tables_become_policies(tmp_path: Path) -> None:
    p = write(tmp_path, '[checks.badmailfrom]\nmode = "log"\ntimeout_s = 2\non_error = "open"\n')
    c = load(p)
    pol = c.policy("badmailfrom")
    assert (pol.mode, pol.timeout_s, pol.on_error) == (Mode.LOG, 2.0, OnError.OPEN)
    assert c.policy("relay").mode is Mode.ENFORCE


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[server]\nlisten = \"127.0.0.1:25\"\n", "server.listen", "must be a list"),
        ("[server]\nlisten = [\"127.0.0.1:99999\"]\n", "server.listen", "port out of range"),
        ("[server]\nlisten = [\"::1:25\"]\n", "server.listen", "[ADDR]:PORT"),
        ("[server]\nlisten = []\n", "server.listen", "at least one"),
        ("[server]\nmax_hops = 0\n", "server.max_hops", "must be > 0"),
        ("[server]\ndatabytes = -1\n", "server.databytes", "must be >= 0"),
        ("[server]\ndatabytes = true\n", "server.databytes", "must be an integer"),
        ("[server]\nshutdown_grace_s = \"soon\"\n", "server.shutdown_grace_s", "must be a number"),
        ("[store]\nurl = \"mysql://x\"\n", "store.url", "unsupported database"),
        ("[log]\nlevel = \"loud\"\n", "log.level", "must be one of"),
        ("server = 3\n", "server", "must be a table"),
        ("[nosuch]\n", "nosuch", "unknown key"),
        ("[checks.badmailfrom]\non_error = \"maybe\"\n", "checks.badmailfrom.on_error",
         "must be one of"),
        ("[delivery]\nmethod = \"maildir\"\nspool = \"\"\n", "delivery.spool", "spool directory"),
    ],
)
def test_bad_values_name_file_key_and_reason(tmp_path: Path, text: str, key: str,
                                             reason: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(p)
    assert info.value.source == str(p)
    assert info.value.key == key
    assert reason in info.value.reason


def test_control_files_fill_unset_values_only(tmp_path: Path) -> None:
    ctl = tmp_path / "control"
    ctl.mkdir()
    (ctl / "me").write_text("mx.ctl.test\n")
    (ctl / "smtpgreeting").write_text("greet.ctl.test hello\n")
    (ctl / "timeoutsmtpd").write_text("60\n")
    (ctl / "databytes").write_text("500\n")
    p = write(tmp_path, f'[server]\nqmail_control_dir = "{ctl}"\ndatabytes = 0\n')
    c = load(p)
    assert c.server.hostname == "mx.ctl.test"
    assert c.server.greeting == "greet.ctl.test hello"
    assert c.server.timeout_s == 60
    assert c.server.databytes == 0  # the file said 0: it wins over control/databytes


def test_bad_control_number_is_a_config_error(tmp_path: Path) -> None:
    ctl = tmp_path / "control"
    ctl.mkdir()
    (ctl / "databytes").write_text("lots\n")
    p = write(tmp_path, f'[server]\nqmail_control_dir = "{ctl}"\n')
    with pytest.raises(ConfigError):
        load(p)


def test_effective_config_round_trips(tmp_path: Path) -> None:
    c = load(write(tmp_path, '[server]\nlocal_domains = ["a.test", ".b.test"]\n'
                             '[checks.badmailfrom]\nmode = "off"\n'))
    again = load(write(tmp_path, to_toml(c).replace('""  # unset', '""')))
    assert isinstance(again, Config)
    assert again.server == c.server and again.checks == c.checks


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:25", ("127.0.0.1", 25)), ("[::1]:2525", ("::1", 2525)),
     ("mx.test", ("mx.test", 25)), ("[::]", ("::", 25))],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected
