"""Per-connection tarpit (qmail's tarpit patch): configuration, control files,
TARPITCOUNT/TARPITDELAY from the environment, and the check against a frozen clock."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mailguard.checks.tarpit import TarpitCheck, effective, scan_ulong, tarpit_delay
from mailguard.clock import FrozenClock
from mailguard.config import load
from mailguard.context import Session, Transaction
from mailguard.errors import ConfigError
from mailguard.metrics import Metrics
from mailguard.settings.limits import TarpitConfig
from mailguard.verdict import Action, Stage


@pytest.mark.parametrize(("text", "value"), [("12", 12), ("12k", 12), ("abc", 0), ("", 0)])
def test_scan_ulong(text: str, value: int) -> None:
    assert scan_ulong(text) == value


@pytest.mark.parametrize(
    ("cfg", "env", "expected"),
    [
        (TarpitConfig(0, 5), {}, (0, 5)),
        (TarpitConfig(3, 5), {}, (3, 5)),
        (TarpitConfig(3, 5), {"TARPITCOUNT": "10"}, (10, 5)),
        (TarpitConfig(3, 5), {"TARPITCOUNT": "0"}, (0, 5)),  # tcprules turns it off
        (TarpitConfig(3, 5), {"TARPITCOUNT": "x"}, (0, 5)),  # as scan_ulong: off
        (TarpitConfig(0, 5), {"TARPITCOUNT": "2", "TARPITDELAY": "9"}, (2, 9)),
        (TarpitConfig(2, 5), {"TARPITDELAY": "100000"}, (2, 300)),  # capped: RFC 5321
    ],
)
def test_effective(cfg: TarpitConfig, env: dict[str, str], expected: tuple[int, int]) -> None:
    assert effective(cfg, env) == expected


@pytest.mark.parametrize(
    ("accepted", "count", "delay", "expected"),
    [(0, 0, 5, 0), (100, 0, 5, 0), (0, 2, 5, 0), (1, 2, 5, 0), (2, 2, 5, 5), (7, 2, 5, 5),
     (3, 2, 0, 0)],
)
def test_tarpit_delay(accepted: int, count: int, delay: int, expected: int) -> None:
    assert tarpit_delay(accepted, count, delay) == expected


def test_control_files_fill_unset_values_and_config_wins(tmp_path: Path) -> None:
    ctl = tmp_path / "control"
    ctl.mkdir()
    (ctl / "tarpitcount").write_text("3\n")
    (ctl / "tarpitdelay").write_text("7\n")
    cfg = tmp_path / "mg.toml"
    cfg.write_text(f'[server]\nqmail_control_dir = "{ctl}"\n')
    assert load(cfg).tarpit == TarpitConfig(3, 7)
    cfg.write_text(f'[server]\nqmail_control_dir = "{ctl}"\n[tarpit]\ncount = 0\n')
    assert load(cfg).tarpit == TarpitConfig(0, 7)
    assert load(None).tarpit == TarpitConfig(0, 5)  # defaults: off, 5 s


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[tarpit]\ncount = -1\n", "tarpit.count"),
        ("[tarpit]\ndelay_s = 301\n", "tarpit.delay_s"),
        ("[tarpit]\nsleep = 1\n", "tarpit.sleep"),
        ("[limits]\ndelay_min_s = 50\ndelay_max_s = 40\n", "limits.delay_min_s"),
        ("[limits]\ndelay_max_s = 600\n", "limits.delay_max_s"),
        ("[limits]\nwindows = [{ period_s = 60, soft_messages = 5, hard_messages = 5 }]\n",
         "limits.windows[0].soft_messages"),
        ("[limits]\nwindows = [{ period_s = 0 }]\n", "limits.windows[0].period_s"),
        ("[limits]\nwindows = [{ period_s = 60 }, { period_s = 60 }]\n", "limits.windows"),
        ("[limits]\nsuspend_on_alert = true\n", "limits.suspend_on_alert"),
        ('[limits]\nalert_to = "Admin <a@b>"\n', "limits.alert_to"),
        ('[limits]\napply_to = "inbound"\n', "limits.apply_to"),
        ('[limits]\nalert_threshold = "medium"\n', "limits.alert_threshold"),
        ('[checks.limits]\nmode = "loud"\n', "checks.limits.mode"),
    ],
)
def test_bad_values_are_refused_with_the_key(tmp_path: Path, toml: str, key: str) -> None:
    p = tmp_path / "mg.toml"
    p.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load(p)
    assert err.value.key == key


def test_limits_and_checks_tables_load(tmp_path: Path) -> None:
    p = tmp_path / "mg.toml"
    p.write_text(
        "[limits]\nwindows = [{ period_s = 600, soft_messages = 5, hard_messages = 9 }]\n"
        'alert_to = "admin@example.com"\nsuspend_on_alert = true\n'
        '[checks.limits]\nmode = "log"\n[checks.tarpit]\nmode = "enforce"\n'
    )
    c = load(p)
    assert c.limits.windows[0].hard_messages == 9 and c.limits.incident_s == 600
    assert c.policy("limits").mode == "log"


def session(rcpt_count: int, env: dict[str, str] | None = None) -> Session:
    s = Session(ipaddress.ip_address("192.0.2.1"), 1234, FrozenClock(), env=env or {})
    s.rcpt_count = rcpt_count
    s.transaction = Transaction("a@example.org", rcpt="b@example.com")
    return s


async def test_check_sleeps_only_after_count_and_records_the_delay() -> None:
    check = TarpitCheck(TarpitConfig(2, 5), Metrics(), enforce=True)
    sleeps = []
    for accepted in range(4):
        s = session(accepted)
        v = await check.evaluate(Stage.RCPT, s)
        assert v.action is Action.CONTINUE
        assert isinstance(s.clock, FrozenClock)
        sleeps.append(s.clock.sleeps)
        if accepted >= 2:
            assert v.reason == f"delayed 5s after {accepted} recipients"
    assert sleeps == [[], [], [5], [5]]


async def test_log_mode_records_but_does_not_sleep_and_env_overrides() -> None:
    check = TarpitCheck(TarpitConfig(0, 5), Metrics(), enforce=False)
    s = session(1, {"TARPITCOUNT": "1", "TARPITDELAY": "2"})
    v = await check.evaluate(Stage.RCPT, s)
    assert v.reason == "would delay 2s after 1 recipients"
    assert isinstance(s.clock, FrozenClock) and s.clock.sleeps == []
