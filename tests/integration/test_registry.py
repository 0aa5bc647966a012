"""The registry is the one list of checks: the daemon builds exactly its entries, in its
order, each running at the stages the table says; the configuration takes its defaults
from it and `mailguard config check` prints every check's effective policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailguard import registry
from mailguard.app import build_checks
from mailguard.clock import FrozenClock
from mailguard.config import load, to_toml
from mailguard.delivery.methods import build_delivery
from mailguard.errors import ConfigError
from mailguard.metrics import Metrics
from mailguard.policy import CheckPolicy, Mode, OnError
from mailguard.resources import Resources
from mailguard.store import migrate
from mailguard.store.repo import Store

EVERYTHING_ON = """
[server]
local_domains = ["example.com"]
[delivery]
spool = "{tmp}/spool"
[checks.greylist]
mode = "log"
[checks.spf]
mode = "enforce"
[clamd]
enabled = true
on_error = "pass"
[spamd]
servers = ["127.0.0.1:783"]
[scan]
deadline_s = 77
"""


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailguard.toml"
    path.write_text(text.replace("{tmp}", str(tmp_path)))
    return path


async def test_daemon_builds_the_registry_in_order(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/mg.db"
    await migrate.upgrade(url)
    config = load(config_file(tmp_path, EVERYTHING_ON), {"store": {"url": url}})
    store = await Store.open(url)
    try:
        clock = FrozenClock()
        res = Resources(config, clock, Metrics(), store, build_delivery(config, clock))
        built = build_checks(res)
    finally:
        await store.close()
    assert [c.name for c, _ in built] == list(registry.check_names())
    for (check, _), spec in zip(built, registry.CHECKS, strict=True):
        assert check.stages == spec.stages, spec.name


def test_defaults_come_from_the_registry_and_sections(tmp_path: Path) -> None:
    plain = load(None)
    assert plain.policy("clamd") == CheckPolicy(Mode.OFF, 120.0, OnError.TEMPFAIL)
    assert plain.policy("greylist").mode is Mode.OFF
    assert plain.policy("dnsbl") == CheckPolicy()
    config = load(config_file(tmp_path, EVERYTHING_ON + "[checks.clamd]\ntimeout_s = 9\n"))
    # [clamd] enabled and on_error = "pass" give mode and on_error; the table only timeout
    assert config.policy("clamd") == CheckPolicy(Mode.ENFORCE, 9.0, OnError.OPEN)
    assert config.policy("spamd") == CheckPolicy(Mode.ENFORCE, 77.0, OnError.TEMPFAIL)
    assert config.policy("greylist") == CheckPolicy(Mode.LOG)


def test_config_check_prints_every_check(tmp_path: Path) -> None:
    text = to_toml(load(None))
    for spec in registry.CHECKS:
        assert f"\n[checks.{spec.name}]  # {spec.about}; stages: " in text
    assert '[checks.clamd]  # virus scanning (ClamAV); stages: queue\nmode = "off"\n' \
        'timeout_s = 120.0\non_error = "tempfail"\n' in text


def test_unknown_check_and_always_enforced(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"checks\.virus.*unknown check \(known: dnsbl, "):
        load(config_file(tmp_path, "[checks.virus]\nmode = 'log'\n"))
    with pytest.raises(ConfigError, match="relay control is always enforced"):
        load(config_file(tmp_path, "[checks.relay]\nmode = 'log'\n"))
    with pytest.raises(ConfigError, match=r"delivery\.method.*must be one of 'maildir', "
                                          r"'qmail-queue'"):
        load(config_file(tmp_path, "[delivery]\nmethod = 'smtp'\n"))
