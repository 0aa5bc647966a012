"""The daemon's watchdog end to end: clamd unreachable → mail waits (451) and the admin
gets one alert mail; clamd back (a reload points at the real one) → a scan answers and
the admin gets one "resolved" note. The incident is in the store throughout."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from email import message_from_bytes
from pathlib import Path

from tests.e2e.conftest import BASE_CONFIG
from tests.e2e.daemon_harness import Client, Daemon, body, codes, start_daemon
from tests.scanner_helpers import closed_port

Connect = Callable[..., Client]

ALERTS = """
[alerts]
to = "admin@example.com"
check_s = 1
scanner_down_s = 0

[clamd]
enabled = true
servers = ["{clamd}"]
"""


def admin_mail(d: Daemon, count: int, timeout_s: float = 15) -> list[bytes]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = d.spooled("example.com", "admin")
        if len(got) >= count:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{count} admin mail(s) expected; log:\n{d.read_log()}")


def test_scanner_down_alert_once_then_resolved(tmp_path: Path, make_daemon: list[Daemon],
                                               connect: Connect, clamd_socket: str) -> None:
    down = BASE_CONFIG + ALERTS.replace("{clamd}", f"127.0.0.1:{closed_port()}")
    d = start_daemon(tmp_path, down)
    make_daemon.append(d)
    c = connect(d)
    c.reply()
    for i in range(2):
        replies = c.transaction("a@example.org", ["u@example.com"], body(f"waits {i}"))
        assert codes(replies)[-1] == 451
    c.cmd("QUIT")
    [alert] = admin_mail(d, 1)
    msg = message_from_bytes(alert)
    assert msg["Subject"] == "[mailguard] clamd unreachable on mx.test"
    assert msg["X-Mailguard-Alert"] == "scanner key=scanner:clamd:mx.test"
    time.sleep(2.5)  # more looks of the watchdog: still one mail (reminders: remind_s)
    assert len(d.spooled("example.com", "admin")) == 1
    # clamd comes back: a reload points the daemon at the running one
    cfg = d.tmp / "mailguard.toml"
    cfg.write_text(cfg.read_text().replace(down.split('servers = ["')[1].split('"')[0],
                                           f"unix:{clamd_socket}"))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log("event=reloaded")
    again = connect(d)  # a session keeps the configuration it started with
    again.reply()
    replies = again.transaction("a@example.org", ["u@example.com"], body("scanned"))
    assert codes(replies)[-1] == 250
    again.cmd("QUIT")
    resolved = message_from_bytes(admin_mail(d, 2)[-1])
    assert resolved["Subject"] == "[mailguard] resolved: clamd unreachable on mx.test"
    assert "event=alert_resolved key='scanner:clamd:mx.test'" in d.read_log()
