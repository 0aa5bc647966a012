"""The quarantine end to end: the daemon with real clamd and spamd keeps spam (and, when
configured, viruses) in `[quarantine] directory` for recipients whose action is
"quarantine"; the admin lists, shows, releases (once) and deletes with
`mailguard quarantine`; purge removes what expired."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from email import message_from_bytes

import pytest

from tests.e2e.daemon_harness import Client, Daemon, start_daemon
from tests.scanner_helpers import eicar, gtube

Connect = Callable[..., Client]

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["filtered.test", "plain.test"]
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{tmp}/spool"

[clamd]
enabled = true
servers = [CLAMD]
scan_timeout_s = 20

[spamd]
servers = [SPAMD]
timeout_s = 20

[quarantine]
directory = "{tmp}/quarantine"
days = 10
viruses = true
"""


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii")


def mail(subject: str, body: str, sender: str = "Spammer <a@example.org>") -> bytes:
    return crlf(f"From: {sender}\nTo: u@filtered.test\nSubject: {subject}\n\n{body}\n")


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    store = f"sqlite+aiosqlite:///{daemon.tmp}/mailguard.db"
    return subprocess.run(
        [sys.executable, "-m", "mailguard.cli.main", *args, "--config",
         str(daemon.tmp / "mailguard.toml"), "--store", store],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "MAILGUARD_CONFIG": ""})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, clamd_socket: str,
           spamd_addr: tuple[str, int]) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("quarantine")
    text = CONFIG.replace("CLAMD", f'"unix:{clamd_socket}"').replace(
        "SPAMD", f'"{spamd_addr[0]}:{spamd_addr[1]}"')
    d = start_daemon(tmp, text)
    res = cli(d, "domain", "spam", "on", "filtered.test", "--action", "quarantine")
    assert res.returncode == 0, res.stderr
    res = cli(d, "domain", "spam", "on", "tagme@filtered.test", "--action", "tag")
    assert res.returncode == 0, res.stderr
    yield d
    assert d.stop() == 0


def held(d: Daemon, *args: str) -> list[list[str]]:
    res = cli(d, "quarantine", "list", *args)
    assert res.returncode == 0, res.stderr
    return [line.split("\t") for line in res.stdout.splitlines()[1:] if "\t" in line]


def send(d: Daemon, connect: Connect, rcpts: list[str], message: bytes) -> bytes:
    c = connect(d)
    assert c.reply().startswith(b"220 ")
    replies = c.transaction("a@example.org", rcpts, message)
    c.cmd("QUIT")
    return replies[-1]


def test_spam_is_held_per_recipient_and_released_once(daemon: Daemon,
                                                      connect: Connect) -> None:
    last = send(daemon, connect, ["q1@filtered.test", "tagme@filtered.test",
                                  "p@plain.test"],
                mail("=?utf-8?q?Cheap_=C3=BCber_offer?=", gtube()))
    assert last.startswith(b"250 ok "), last
    # q1's copy is held, not delivered; tagme (own action "tag") and plain.test got theirs
    assert daemon.spooled("filtered.test", "q1") == []
    [tagged] = daemon.spooled("filtered.test", "tagme")
    assert message_from_bytes(tagged)["Subject"].startswith("[SPAM]")
    assert len(daemon.spooled("plain.test", "p")) == 1
    rows = held(daemon, "--rcpt", "Q1@filtered.test")
    assert len(rows) == 1
    entry_id, _when, kind, score, size, rcpt, sender, subject = rows[0]
    assert (kind, rcpt, sender, subject) == ("spam", "q1@filtered.test", "<a@example.org>",
                                            "Cheap über offer")
    assert float(score) >= 5 and int(size) > 0
    files = list((daemon.tmp / "quarantine").glob("????-??-??/*"))
    assert len(files) == 1
    assert b"X-Spam-Flag: YES" in files[0].read_bytes()
    # show prints the held copy; release delivers it once; a second release finds nothing
    shown = cli(daemon, "quarantine", "show", entry_id)
    assert shown.returncode == 0 and "GTUBE" in shown.stdout
    res = cli(daemon, "quarantine", "release", entry_id)
    assert res.returncode == 0, res.stderr
    assert "released to q1@filtered.test" in res.stdout
    again = cli(daemon, "quarantine", "release", entry_id)
    assert again.returncode == 3 and "no such held message" in again.stderr
    [released] = daemon.spooled("filtered.test", "q1")
    parsed = message_from_bytes(released)
    assert parsed["X-MailGuard-Released"].startswith("by cli; ")
    assert parsed["X-Spam-Flag"] == "YES"
    assert not files[0].exists()  # the file goes with the release
    assert held(daemon, "--rcpt", "q1@filtered.test") == []
    assert len(held(daemon, "--rcpt", "q1@filtered.test", "--status", "released")) == 1


def test_virus_copy_is_kept_for_the_admin_and_the_sender_refused(
        daemon: Daemon, connect: Connect) -> None:
    last = send(daemon, connect, ["v@plain.test"], mail("invoice", eicar().decode()))
    assert last.startswith(b"554 "), last
    rows = held(daemon, "--rcpt", "v@plain.test")
    assert [(r[2], r[5]) for r in rows] == [("virus", "v@plain.test")]
    res = cli(daemon, "quarantine", "delete", rows[0][0])
    assert res.returncode == 0 and res.stdout == f"{rows[0][0]}: deleted\n"
    assert held(daemon, "--rcpt", "v@plain.test") == []
    assert cli(daemon, "quarantine", "delete", rows[0][0]).returncode == 3


def test_quarantine_unwritable_is_451_and_nothing_delivered(
        daemon: Daemon, connect: Connect) -> None:
    # a file where the quarantine's tmp/ directory should be: no copy can be written
    # (a read-only directory would not stop root)
    qtmp = daemon.tmp / "quarantine" / "tmp"
    if qtmp.exists():
        qtmp.rmdir()
    qtmp.write_text("in the way")
    try:
        last = send(daemon, connect, ["q2@filtered.test"], mail("offer", gtube()))
    finally:
        qtmp.unlink()
    assert last.startswith(b"451 4.3.0 cannot keep the message in quarantine"), last
    assert daemon.spooled("filtered.test", "q2") == []
    assert held(daemon, "--rcpt", "q2@filtered.test") == []
