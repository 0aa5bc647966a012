"""The supervisor's decisions (mailguard/workers.py): how many workers, and how long to
wait before restarting one that died."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailguard.config import load
from mailguard.errors import ConfigError
from mailguard.workers import MAX_PAUSE_S, restart_pause, worker_count


@pytest.mark.parametrize(("setting", "cpus", "expected"), [
    (1, 8, 1),      # the default: the daemon alone
    (3, 8, 3),      # as configured, whatever the cores
    (0, 8, 8),      # one per core
    (0, 2, 2),
    (0, None, 1),   # cores unknown: one
])
def test_worker_count(setting: int, cpus: int | None, expected: int) -> None:
    assert worker_count(setting, cpus) == expected


@pytest.mark.parametrize(("lived_s", "last_pause_s", "expected"), [
    (3600.0, 0.0, 0.0),     # ran for an hour: restarted at once
    (10.0, 16.0, 0.0),      # a long enough run forgets the earlier crash loop
    (0.2, 0.0, 0.5),        # died young: a first pause
    (0.2, 0.5, 1.0),        # and again: doubled…
    (9.9, 8.0, 16.0),
    (0.1, 16.0, MAX_PAUSE_S),  # …up to the ceiling
    (0.1, MAX_PAUSE_S, MAX_PAUSE_S),
])
def test_restart_pause(lived_s: float, last_pause_s: float, expected: float) -> None:
    assert restart_pause(lived_s, last_pause_s) == expected


def test_workers_setting(tmp_path: Path) -> None:
    assert load(None).server.workers == 1
    path = tmp_path / "w.toml"
    path.write_text("[server]\nworkers = 0\n")
    assert load(str(path)).server.workers == 0
    path.write_text("[server]\nworkers = -1\n")
    with pytest.raises(ConfigError, match=r"server\.workers"):
        load(str(path))
