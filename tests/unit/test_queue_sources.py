"""`[queue] scan_sources`: which callers of the QMAILQUEUE wrapper are scanned, and
contrib/toml_set.py, which writes the quickstart's configuration from the example."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from mailguard.config import load
from mailguard.control.queueop import source_of
from mailguard.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("env", "source"),
    [
        ({"TCPREMOTEIP": "192.0.2.7", "TCPLOCALIP": "127.0.0.1"}, "smtp"),  # qmail-smtpd
        ({"TCPREMOTEIP": ""}, "smtp"),  # set, even empty: tcpserver's child
        ({}, "local"),  # qmail-inject, sendmail
        ({"RECIPIENT": "joe@example.com", "SENDER": "a@b"}, "local"),  # qmail-local forward
        ({"TCPLOCALIP": "127.0.0.1"}, "local"),
    ],
)
def test_source_of_the_caller(env: dict[str, str], source: str) -> None:
    assert source_of(env) == source


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("smtp", "local")),
        ('scan_sources = ["smtp"]', ("smtp",)),
        ('scan_sources = ["local"]', ("local",)),
        ("scan_sources = []", ()),
    ],
)
def test_scan_sources_loaded(tmp_path: Path, text: str, expected: tuple[str, ...]) -> None:
    p = tmp_path / "mg.toml"
    p.write_text(f"[queue]\n{text}\n")
    assert load(p).queue.scan_sources == expected


@pytest.mark.parametrize("text", ['scan_sources = ["smtpd"]', 'scan_sources = "smtp"'])
def test_bad_scan_sources_refused(tmp_path: Path, text: str) -> None:
    p = tmp_path / "mg.toml"
    p.write_text(f"[queue]\n{text}\n")
    with pytest.raises(ConfigError, match="scan_sources"):
        load(p)


def toml_set() -> ModuleType:
    spec = importlib.util.spec_from_file_location("toml_set", ROOT / "contrib" / "toml_set.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["toml_set"] = module
    spec.loader.exec_module(module)
    return module


def test_toml_set_replaces_adds_and_keeps_comments() -> None:
    text = '# top\n[a]\nx = 1  # old\n# note\n[b]\ny = "q"\n'
    out = toml_set().set_keys(text, {("a", "x"): "2", ("a", "z"): "[3]", ("b", "y"): '"r"',
                                     ("c", "w"): "true"})
    assert out == '# top\n[a]\nx = 2\n# note\nz = [3]\n[b]\ny = "r"\n\n[c]\nw = true\n'
    assert tomllib.loads(out) == {"a": {"x": 2, "z": [3]}, "b": {"y": "r"}, "c": {"w": True}}


def test_toml_set_on_the_example_gives_a_valid_configuration(tmp_path: Path) -> None:
    out = tmp_path / "qs.toml"
    code = toml_set().main([str(ROOT / "contrib" / "mailguard.example.toml"), str(out),
                            'server.listen=["127.0.0.1:2999"]', "clamd.enabled=true",
                            f'control.socket="{tmp_path}/c.sock"'])
    assert code == 0
    config = load(out)
    assert config.server.listen == ("127.0.0.1:2999",)
    assert config.clamd.enabled and config.control.socket == f"{tmp_path}/c.sock"
    assert "# Virus warnings" in out.read_text()  # the example's comments stay
