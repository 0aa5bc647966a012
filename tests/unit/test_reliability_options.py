"""The issue-12 limits are documented with their defaults (README's configuration
reference) and shipped in contrib/mailguard.example.toml with those values."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from mailguard.config import ServerConfig
from mailguard.settings.control import ControlConfig
from tests.unit.test_docs_options import CELL_SPLIT, shows

ROOT = Path(__file__).resolve().parents[2]
NEW_SERVER_KEYS = ("max_rcpts", "data_timeout_s", "session_timeout_s")
NEW_CONTROL_KEYS = ("trusted_users", "trusted_groups")


def readme_rows() -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `"):
            cells = CELL_SPLIT.split(line)[1:-1]
            for key in re.findall(r"`([^`]+)`", cells[0]):
                rows.setdefault(key, cells[1].strip())
    return rows


@pytest.mark.parametrize("key", NEW_SERVER_KEYS)
def test_server_limits_in_the_readme(key: str) -> None:
    cell = readme_rows()[f"server.{key}"]
    assert shows(getattr(ServerConfig(), key), cell), cell


def test_control_trust_in_the_readme() -> None:
    rows = readme_rows()
    assert all(f"control.{k}" in rows for k in NEW_CONTROL_KEYS)
    assert '`["qmaild"]`' in rows["control.trusted_users"]


def test_example_ships_the_defaults() -> None:
    example = tomllib.loads((ROOT / "contrib" / "mailguard.example.toml").read_text())
    for key in NEW_SERVER_KEYS:
        assert example["server"][key] == getattr(ServerConfig(), key)
    for key in NEW_CONTROL_KEYS:
        assert tuple(example["control"][key]) == getattr(ControlConfig(), key)
