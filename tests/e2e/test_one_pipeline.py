"""One pipeline for both ways in: the same message through the daemon's SMTP listener and
through the QMAILQUEUE wrapper runs the same QUEUE-stage checks (the real clamd, and a
check added to the registry and nowhere else) and leaves the same summary line and
`message_log` row, up to what only one path knows (HELO, connect-time checks, the
wrapper's exit status)."""

from __future__ import annotations

import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import RECORDER, Client, Daemon, run_cli, start_daemon
from tests.e2e.tcpserver_harness import LEAN_QUEUE, lean_env, run_queue_program
from tests.scanner_helpers import message, with_attachment

SERVE = [sys.executable, "-m", "tests.tools.serve_with_attachment_check"]
CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
shutdown_grace_s = 5

[delivery]
method = "qmail-queue"
qmail_queue = "{tmp}/inner-qq"

[clamd]
enabled = true
servers = ["unix:%s"]
"""
SMTP_ENV = {"TCPREMOTEIP": "127.0.0.1", "TCPLOCALIP": "127.0.0.1"}
FIELDS = ("from", "rcpts", "refused", "result", "reply", "checks")


@pytest.fixture
def daemon(tmp_path: Path, clamd_socket: str) -> Iterator[Daemon]:
    inner = tmp_path / "inner-qq"
    (tmp_path / "rec").mkdir()
    inner.write_text(f'#!/bin/sh\nRECORD_DIR="{tmp_path}/rec" exec "{sys.executable}" '
                     f'"{RECORDER}"\n')
    inner.chmod(0o755)
    d = start_daemon(tmp_path, CONFIG % clamd_socket, program=SERVE)
    yield d
    assert d.stop() == 0


def summary(line: str) -> dict[str, str]:
    pairs = re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line)
    return {k: v.strip('"') for k, v in pairs}


def both_ways(d: Daemon, sender: str, rcpt: str, body: bytes) -> tuple[dict[str, str],
                                                                      dict[str, str], int]:
    """Send `body` over SMTP, then through the wrapper; both summary lines and the
    wrapper's exit status."""
    c = Client(d.host, d.port)
    try:
        c.reply()
        c.cmd("HELO client.test")
        c.transaction(sender, [rcpt], body.replace(b"\n", b"\r\n"))
    finally:
        c.close()
    env = b"F" + sender.encode() + b"\0T" + rcpt.encode() + b"\0\0"
    run = run_queue_program(LEAN_QUEUE, body, env, lean_env(d.control, **SMTP_ENV), fd6=False)
    log = d.wait_log(" source=smtp ")
    smtp_line, queue_line = [x for x in log.splitlines() if "event=transaction" in x]
    return summary(smtp_line), summary(queue_line), run.exit_code


def queue_checks(checks: str) -> str:
    """The QUEUE stage's part of `checks=`: clamd and what comes after it."""
    return checks[checks.index("clamd="):]


def rows(d: Daemon) -> list[tuple[str, str, str, int, str]]:
    deadline = time.monotonic() + 5
    while True:  # the record writer works off the SMTP path
        with sqlite3.connect(d.tmp / "mailguard.db") as db:
            got = db.execute("SELECT mail_from, rcpts, outcome, reply_code, verdicts "
                             "FROM message_log ORDER BY id").fetchall()
        if len(got) >= 2 or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_ham_same_line_and_row_on_both_paths(daemon: Daemon) -> None:
    smtp, queue, code = both_ways(daemon, "a@example.org", "b@example.com",
                                  message("hello, just text").replace(b"\r\n", b"\n"))
    assert code == 0
    assert {k: smtp[k] for k in FIELDS if k != "checks"} == \
        {k: queue[k] for k in FIELDS if k != "checks"}
    assert (smtp["result"], smtp["reply"]) == ("accepted", "250")
    assert queue_checks(smtp["checks"]) == queue["checks"] == "clamd=pass attachments=pass"
    assert smtp["checks"].startswith("dnsbl=pass ")  # connect-time checks: SMTP only
    (s_from, s_rcpts, s_out, s_code, s_v), (q_from, q_rcpts, q_out, q_code, q_v) = \
        rows(daemon)
    assert (s_from, s_rcpts, s_out, s_code) == (q_from, q_rcpts, q_out, q_code)
    assert queue_checks(s_v) == q_v == "clamd=pass attachments=pass"


def test_registry_only_check_refuses_on_both_paths(daemon: Daemon) -> None:
    body = with_attachment("invoice.exe", b"MZ not really a program").replace(b"\r\n", b"\n")
    smtp, queue, code = both_ways(daemon, "a@example.org", "b@example.com", body)
    assert code == 31  # qmail-queue's "permanently refused" for the wrapper's caller
    for line in (smtp, queue):
        assert (line["result"], line["reply"]) == ("rejected", "554")
        assert queue_checks(line["checks"]) == \
            "clamd=pass attachments=fail(executable attachment invoice.exe)"
    assert list((daemon.tmp / "rec").glob("*.env")) == []  # nothing queued either way


def test_mailguard_log_shows_counts_and_purges_both_paths(daemon: Daemon) -> None:
    both_ways(daemon, "a@example.org", "b@example.com", b"Subject: hi\n\nhello\n")
    assert len(rows(daemon)) == 2
    store = ("--store", f"sqlite+aiosqlite:///{daemon.tmp}/mailguard.db")
    recent = run_cli("log", "recent", *store)
    assert recent.returncode == 0, recent.stderr
    lines = recent.stdout.splitlines()
    assert len(lines) == 2
    assert all("accepted 250  127.0.0.1  <a@example.org> -> b@example.com" in x
               for x in lines)
    assert lines[0].endswith("  clamd=pass attachments=pass")  # the wrapper's, newest
    counts = run_cli("log", "counts", "--since", "1h", *store)
    assert counts.stdout.startswith("accepted: 2\ntotal: 2 (since "), counts.stdout
    assert run_cli("log", "purge", "--older-than", "1h", *store).stdout == \
        "purged 0 transactions\n"
    bad = run_cli("log", "counts", "--since", "soon", *store)
    assert (bad.returncode, bad.stderr) == (2, "mailguard: 'soon' is not a duration "
                                               "(e.g. 30d, 12h, 15m, 3600s)\n")
