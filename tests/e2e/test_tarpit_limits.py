"""Tarpitting and per-user limits through the real daemon, as an admin would try them:
the per-connection tarpit delays the 3rd RCPT, a suspended user gets the 451 text, a
user past the hard limit is refused and the admin gets one alert in the spool."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.daemon_harness import Client, Daemon, body, codes, run_cli, start_daemon

Connect = Callable[..., Client]

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
relay_networks = ["127.0.0.1/32"]
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{tmp}/spool"
"""


def cli(d: Daemon, *args: str) -> str:
    res = run_cli(*args, "--config", str(d.tmp / "mailguard.toml"),
                  "--store", f"sqlite+aiosqlite:///{d.tmp}/mailguard.db")
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_per_connection_tarpit_delays_the_third_rcpt(
        tmp_path: Path, make_daemon: list[Daemon], connect: Connect) -> None:
    d = start_daemon(tmp_path, CONFIG + "\n[tarpit]\ncount = 2\ndelay_s = 1\n")
    make_daemon.append(d)
    c = connect(d, source="127.0.0.5")  # a stranger: only local recipients
    c.reply()
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    waits = []
    for i in range(3):
        started = time.monotonic()
        assert c.cmd(f"RCPT TO:<u{i}@example.com>") == b"250 ok\r\n"
        waits.append(time.monotonic() - started)
    assert waits[0] < 0.9 and waits[1] < 0.9
    assert waits[2] >= 1.0
    assert c.cmd("DATA").startswith(b"354 ")
    c.send(body("tarpitted") + b".\r\n")
    assert c.reply().startswith(b"250 ok ")
    log = d.wait_log("event=transaction")
    assert "tarpit=pass(delayed 1s after 2 recipients)" in log, log


def test_suspended_user_gets_the_451_text(
        tmp_path: Path, make_daemon: list[Daemon], connect: Connect) -> None:
    d = start_daemon(tmp_path, CONFIG + '\n[limits]\nalert_to = "admin@example.com"\n')
    make_daemon.append(d)
    assert "suspended" in cli(d, "user", "suspend", "alice@example.com", "--reason", "phished")
    c = connect(d)  # 127.0.0.1: a relay client, the user is its envelope sender
    c.reply()
    assert c.cmd("MAIL FROM:<alice@example.com>") == (
        b"451 4.7.1 account alice@example.com is suspended for sending too much mail; "
        b"contact admin@example.com\r\n")
    # another user of the same client relays as usual
    assert codes(c.transaction("bob@example.com", ["x@foreign.test"], body("hi"))) == [
        250, 250, 354, 250]
    assert "alice@example.com" in cli(d, "user", "list")
    cli(d, "user", "unsuspend", "alice@example.com")
    assert codes(c.transaction("alice@example.com", ["x@foreign.test"], body("hi"))) == [
        250, 250, 354, 250]


def test_hard_limit_refuses_and_alerts_the_admin_once(
        tmp_path: Path, make_daemon: list[Daemon], connect: Connect) -> None:
    limits = ('\n[limits]\nwindows = [{ period_s = 3600, hard_messages = 2 }]\n'
              'alert_to = "admin@example.com"\nalert_from = "mailguard@example.com"\n')
    d = start_daemon(tmp_path, CONFIG + limits)
    make_daemon.append(d)
    c = connect(d)
    c.reply()
    for i in range(2):
        replies = c.transaction("alice@example.com", ["x@foreign.test"], body(f"offer {i}"))
        assert codes(replies) == [250, 250, 354, 250]
    refused = (b"451 4.7.1 too much mail from alice@example.com in the last hour, "
               b"try again later\r\n")
    assert c.cmd("MAIL FROM:<alice@example.com>") == refused
    assert c.cmd("MAIL FROM:<alice@example.com>") == refused
    log = d.wait_log("result=tempfail reply=451")  # a refused MAIL has its summary line
    assert 'from=<alice@example.com> rcpts="" refused="" size=0 result=tempfail reply=451 ' \
        'queue_id="" checks="dnsbl=pass limits=fail(messages 3 > hard 2 in 3600s)"' in log, log
    [alert] = d.spooled("example.com", "admin")
    assert b"Return-Path: <mailguard@example.com>\n" in alert
    assert b"Subject: [mailguard] outbound mail limited: alice@example.com\n" in alert
    assert b"  foreign.test  2\n" in alert and b"  - offer 1\n" in alert
    d.wait_log("event=limits_alert result=sent user='alice@example.com'")
    shown = cli(d, "user", "show", "alice@example.com")
    assert "state:       hard (refused)" in shown and "alerts:      1" in shown
