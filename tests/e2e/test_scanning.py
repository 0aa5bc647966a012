"""The daemon with [clamd]/[spamd] against the real test services: what a client sees
and what reaches the spool; domains switched on with the admin script."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from email import message_from_bytes
from pathlib import Path

import pytest

from tests.e2e.daemon_harness import ROOT, Client, Daemon, start_daemon
from tests.e2e.tls_support import plain
from tests.scanner_helpers import closed_port, eicar, gtube

Connect = Callable[..., Client]
SPAMFILTER = ROOT / "qmail-hooks" / "spamfilter"

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
"""


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii")


def mail(subject: str, body: str) -> bytes:
    return crlf(f"From: a@example.org\nTo: u@filtered.test\nSubject: {subject}\n\n{body}\n")


def spamfilter(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILGUARD": f"{sys.executable} -m mailguard.cli.main",
           "MAILGUARD_CONFIG": str(daemon.tmp / "mailguard.toml")}
    store = f"sqlite+aiosqlite:///{daemon.tmp}/mailguard.db"
    return subprocess.run([str(SPAMFILTER), *args, "--store", store], capture_output=True,
                          text=True, env=env, timeout=60, check=False)


def config(clamd: str, spamd: str) -> str:
    return CONFIG.replace("CLAMD", f'"{clamd}"').replace("SPAMD", f'"{spamd}"')


@pytest.fixture(scope="module")
def scanning_daemon(tmp_path_factory: pytest.TempPathFactory, clamd_socket: str,
                    spamd_addr: tuple[str, int]) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("scan")
    d = start_daemon(tmp, config(f"unix:{clamd_socket}", f"{spamd_addr[0]}:{spamd_addr[1]}"))
    yield d
    assert d.stop() == 0


def test_virus_is_refused_and_only_warnings_are_spooled(
    scanning_daemon: Daemon, connect: Connect
) -> None:
    c = connect(scanning_daemon)
    assert c.reply().startswith(b"220 ")
    replies = c.transaction("a@example.org", ["v1@filtered.test", "v2@plain.test"],
                            mail("invoice", eicar().decode()))
    assert replies[-1] == (b"554 5.7.1 message refused: virus "
                           b"Eicar-Test-Signature-Mailguard.UNOFFICIAL found\r\n")
    assert c.cmd("QUIT").startswith(b"221 ")
    # The virus reached nobody; the local recipients and the admin got one warning each,
    # from the null sender; the (foreign, probably forged) sender got none.
    warnings = {
        who: scanning_daemon.spooled(*who)
        for who in (("filtered.test", "v1"), ("plain.test", "v2"), ("mx.test", "postmaster"))
    }
    for who, msgs in warnings.items():
        assert len(msgs) == 1, who
        [msg] = msgs
        parsed = message_from_bytes(msg)
        assert parsed["Return-Path"] == "<>"
        assert parsed["Subject"] == "VIRUS WARNING : Eicar-Test-Signature-Mailguard.UNOFFICIAL"
        assert parsed["Auto-Submitted"] == "auto-generated"
        assert b"Subject: invoice" in msg  # the original's headers are quoted
        assert b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE" not in msg  # its body is not
    assert scanning_daemon.spooled("example.org", "a") == []


def test_spam_tagged_only_where_filtering_is_on(scanning_daemon: Daemon,
                                                connect: Connect) -> None:
    res = spamfilter(scanning_daemon, "enable", "filtered.test")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "filtered.test: spam filtering on, action tag (default)\n"
    res = spamfilter(scanning_daemon, "status", "plain.test")
    assert res.stdout == "plain.test: spam filtering off\n"
    c = connect(scanning_daemon)
    c.reply()
    replies = c.transaction("a@example.org", ["s1@filtered.test", "s2@plain.test"],
                            mail("offer", gtube()))
    assert replies[-1].startswith(b"250 ok "), replies
    [tagged] = scanning_daemon.spooled("filtered.test", "s1")
    [plain] = scanning_daemon.spooled("plain.test", "s2")
    t, p = message_from_bytes(tagged), message_from_bytes(plain)
    assert t["Subject"] == "[SPAM] offer" and t["X-Spam-Flag"] == "YES"
    assert p["Subject"] == "offer" and p["X-Spam-Flag"] is None
    assert t["X-MailGuard-Virus-Scan"] == p["X-MailGuard-Virus-Scan"] == "clean"
    # the rest of the message is exactly what the client sent (LF line ends)
    assert plain.split(b"\n\n", 1)[1] == crlf(gtube() + "\n").replace(b"\r\n", b"\n")
    res = spamfilter(scanning_daemon, "disable", "filtered.test")
    assert res.stdout == "filtered.test: spam filtering off\n"


def test_scanner_down_is_451_and_nothing_spooled(make_daemon: list[Daemon], tmp_path: Path,
                                                 connect: Connect,
                                                 spamd_addr: tuple[str, int]) -> None:
    d = start_daemon(tmp_path, config(f"127.0.0.1:{closed_port()}",
                                      f"{spamd_addr[0]}:{spamd_addr[1]}"))
    make_daemon.append(d)
    c = connect(d)
    c.reply()
    replies = c.transaction("a@example.org", ["u@plain.test"], mail("hello", "just text"))
    assert replies[-1] == b"451 4.3.0 virus scanner unavailable, try again later\r\n"
    assert d.spooled("plain.test", "u") == []
    assert "clamd=error(clamd: 127.0.0.1:" in d.wait_log("result=tempfail reply=451")


AUTH = f"""
[auth]
enabled = true
require_tls = false
backend = "checkpassword"
checkpassword = ["{ROOT / "tests" / "tools" / "checkpassword_test.py"}", "/bin/true"]
failure_delay_s = 0
"""


def test_authenticated_sender_is_warned(make_daemon: list[Daemon], tmp_path: Path,
                                        connect: Connect, clamd_socket: str,
                                        spamd_addr: tuple[str, int]) -> None:
    """notify_sender = "local": a foreign sender is warned only when the session logged
    in (SMTP AUTH) — the daemon tells the scanning engine who authenticated."""
    d = start_daemon(tmp_path, config(f"unix:{clamd_socket}",
                                      f"{spamd_addr[0]}:{spamd_addr[1]}") + AUTH)
    make_daemon.append(d)
    for login in (True, False):
        c = connect(d)
        c.reply()
        assert c.cmd("EHLO client.test").startswith(b"250-mx.test")
        if login:
            assert c.cmd(f"AUTH PLAIN {plain('good', 'secret')}").startswith(b"235 ")
        replies = c.transaction("joe@example.org", ["v@plain.test"],
                                mail(f"login={login}", eicar().decode()))
        assert replies[-1].startswith(b"554 5.7.1 message refused: virus ")
    [warning] = d.spooled("example.org", "joe")  # only for the authenticated session
    assert b"Subject: VIRUS WARNING : " in warning
    assert b"login=True" in warning and b"login=False" not in warning
    assert len(d.spooled("plain.test", "v")) == 2
