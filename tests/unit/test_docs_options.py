"""Every option of the policy features' settings is documented, with its default, in the
options tables of the feature's doc (docs/<feature>.md): a row whose first cell names the
key in backticks (`delay_s` or `greylist.delay_s`) and whose second cell shows the default."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from mailguard.settings.alerts import AlertsConfig
from mailguard.settings.dns import DnsConfig
from mailguard.settings.dnsbl import DnsblConfig, DnsblZone
from mailguard.settings.greylist import GreylistConfig
from mailguard.settings.limits import LimitsConfig, TarpitConfig
from mailguard.settings.qmail_watch import QmailWatchConfig
from mailguard.settings.quarantine import QuarantineConfig
from mailguard.settings.spf import SpfConfig
from mailguard.settings.stats import StatsConfig
from mailguard.settings.web import WebConfig

DOCS = Path(__file__).resolve().parents[2] / "docs"
CELL_SPLIT = re.compile(r"(?<!\\)\|")  # `a\|b` inside a cell is not a separator


def option_rows(doc: str) -> dict[str, str]:
    """key (each backticked name in a row's first cell) -> that row's default cell."""
    rows: dict[str, str] = {}
    for line in (DOCS / doc).read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = CELL_SPLIT.split(line)[1:-1]
        if len(cells) < 2:
            continue
        for key in re.findall(r"`([^`]+)`", cells[0]):
            rows.setdefault(key, cells[1].strip())
    return rows


def shows(value: Any, cell: str) -> bool:
    """Does the default cell show `value`?"""
    if isinstance(value, bool):
        return ("true" if value else "false") in cell
    if isinstance(value, int | float):
        number = int(value) if float(value).is_integer() else value
        return re.search(rf"(?<![\d.]){re.escape(str(number))}(\.0)?(?![\d.])", cell) is not None
    if isinstance(value, str):
        return (value or '""') in cell
    if isinstance(value, tuple) and not value:
        return "[]" in cell
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]" in cell
    raise AssertionError(f"no rule for a default like {value!r}")


@pytest.mark.parametrize(
    ("value", "cell", "expected"),
    [
        (300, "300", True), (300, "`30`", False), (300.0, "300", True), (5.0, "5 s", True),
        (5, "`0.5`", False), (20.0, "20.0", True), (True, "`true`", True), (False, "`true`", False),
        ("", '`""`', True), ("", "empty", False), ("net", '`"net"`', True), ((), "`[]`", True),
    ],
)
def test_shows(value: Any, cell: str, expected: bool) -> None:
    assert shows(value, cell) is expected


FEATURES = [
    ("dnsbl.md", DnsConfig, "dns."),
    ("dnsbl.md", DnsblConfig, "dnsbl."),
    ("dnsbl.md", DnsblZone, "dnsbl.zones[]."),
    ("greylist.md", GreylistConfig, "greylist."),
    ("web.md", WebConfig, "web."),
    ("quarantine.md", QuarantineConfig, "quarantine."),
    ("monitoring.md", StatsConfig, "stats."),
    ("spf.md", SpfConfig, "spf."),
    ("limits.md", TarpitConfig, "tarpit."),
    ("limits.md", LimitsConfig, "limits."),
    ("monitoring.md", AlertsConfig, "alerts."),
    ("monitoring.md", QmailWatchConfig, "qmail_watch."),
]


@pytest.mark.parametrize(("doc", "cls", "prefix"), FEATURES,
                         ids=[f"{d}:{c.__name__}" for d, c, _ in FEATURES])
def test_every_option_and_default_is_documented(doc: str, cls: type, prefix: str) -> None:
    rows = option_rows(doc)
    instance = cls(zone="x") if cls is DnsblZone else cls()
    for f in dataclasses.fields(cls):
        cell = rows.get(prefix + f.name, rows.get(f.name))
        assert cell is not None, f"{doc}: no row for `{prefix}{f.name}`"
        default = getattr(instance, f.name)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            assert cell == "—", f"{doc}: `{f.name}` is required"
        elif default is None:  # unset: qmail's control file, then a built-in value
            assert "control" in cell, f"{doc}: `{f.name}`: {cell}"
        elif f.name == "windows":
            for w in default:
                assert f"{w.soft_messages}/{w.hard_messages} messages" in cell, cell
                assert f"{w.soft_rcpts}/{w.hard_rcpts} recipients" in cell, cell
        else:
            assert shows(default, cell), f"{doc}: `{f.name}` default {default!r}, doc: {cell}"
