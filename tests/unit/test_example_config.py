"""contrib/mailguard.example.toml: as shipped, and with every commented section
uncommented (what a new user does to turn a feature on), is a working configuration that
names every key of those sections."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from mailguard.cli.main import main
from mailguard.config import load
from mailguard.settings.alerts import AlertsConfig
from mailguard.settings.dns import DnsConfig
from mailguard.settings.dnsbl import DnsblConfig, DnsblZone
from mailguard.settings.greylist import GreylistConfig
from mailguard.settings.limits import LimitsConfig, TarpitConfig
from mailguard.settings.qmail_watch import QmailWatchConfig
from mailguard.settings.spf import SpfConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "contrib" / "mailguard.example.toml"
SECTION = re.compile(r"^# \[")  # "# [greylist]", "# [[dnsbl.zones]]", "# [checks.spf]"


def uncommented(text: str) -> str:
    """Each block starting at a commented table header, up to the next line that is not
    a comment, loses its "# " prefixes; prose comments elsewhere stay as they are."""
    out, inside = [], False
    for line in text.splitlines():
        if SECTION.match(line):
            inside = True
        elif not line.startswith("#"):
            inside = False
        out.append(line[2:] if inside and line.startswith("# ") else line)
    return "\n".join(out) + "\n"


@pytest.fixture
def full(tmp_path: Path) -> Path:
    path = tmp_path / "full.toml"
    path.write_text(uncommented(EXAMPLE.read_text()))
    return path


@pytest.mark.parametrize("which", ["as shipped", "uncommented"])
def test_config_check_accepts_it(which: str, full: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLE if which == "as shipped" else full
    assert main(["config", "check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "[dnsbl]" in out and err == f"# configuration OK ({path})\n"


def test_uncommenting_turns_the_features_on(full: Path) -> None:
    cfg = load(full)
    assert [z.zone for z in cfg.dnsbl.zones] == ["zen.spamhaus.org"]
    assert {"dnsbl", "greylist", "spf", "limits"} <= set(cfg.checks)
    assert str(cfg.checks["greylist"].mode) == "enforce"
    assert len(cfg.limits.windows) == 2 and cfg.tarpit.count == 0


@pytest.mark.parametrize(
    ("path", "cls"),
    [
        (("dns",), DnsConfig),
        (("dnsbl",), DnsblConfig),
        (("dnsbl", "zones", 0), DnsblZone),
        (("greylist",), GreylistConfig),
        (("spf",), SpfConfig),
        (("tarpit",), TarpitConfig),
        (("limits",), LimitsConfig),
        (("alerts",), AlertsConfig),
        (("qmail_watch",), QmailWatchConfig),
    ],
)
def test_every_key_is_in_the_example(full: Path, path: tuple[str | int, ...],
                                     cls: type) -> None:
    table: Any = tomllib.loads(full.read_text())
    for part in path:
        table = table[part]
    assert set(table) == {f.name for f in fields(cls)}
