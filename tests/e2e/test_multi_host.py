"""Several MX hosts on one store (issue 12), on one machine: two daemons on their own ports
(and a drop-in `mailguard smtpd` under tcpserver in front of the second), one database
(a SQLite file, or one PostgreSQL database as a real multi-host site would use).

An admin's checklist: a greylist pass seen by host A lets the retry through host B (and
the other way); per-user limits and AUTH failures count across hosts; an override or a
spam preference set with the CLI applies on both hosts at the next connection; clamd and
spamd lists with dead first members fail over, and with every member dead mail is
tempfailed (451) on every host."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest
from sqlalchemy import update

from mailguard.store.models import GreylistEntry
from mailguard.store.repo import Store
from tests.e2e.daemon_harness import RECORDER, Client, Daemon, body, codes, run_cli, start_daemon
from tests.e2e.shared_store import KINDS, shared_store
from tests.e2e.tcpserver_harness import (
    LEAN_SMTPD,
    Tcpserver,
    have_ucspi,
    lean_env,
    start_tcpserver,
)
from tests.e2e.test_auth_checkpassword import CHECKPW, FAILED, OK, TOO_MANY
from tests.e2e.tls_support import plain
from tests.scanner_helpers import closed_port, eicar, gtube

pytestmark = pytest.mark.skipif(not have_ucspi(), reason="ucspi-tcp is not installed")

GREYLISTED = b"451 4.7.1 Greylisted, please try again in 300 seconds\r\n"
LIMITED = b"451 4.7.1 too much mail from alice@example.com in the last hour, try again later\r\n"
VIRUS = b"554 5.7.1 message refused: virus Eicar-Test-Signature-Mailguard.UNOFFICIAL found\r\n"

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com", "filtered.test"]
relay_networks = ["127.0.0.2/32"]
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{tmp}/spool"

[checks.greylist]
mode = "enforce"

[greylist]
key = "ip"
exempt_rcpts = ["@filtered.test"]

[limits]
windows = [{ period_s = 3600, hard_messages = 3 }]
alert_to = "admin@example.com"
alert_from = "mailguard@example.com"

[auth]
enabled = true
require_tls = false
mechanisms = ["PLAIN"]
backend = "checkpassword"
checkpassword = ["CHECKPW", "/bin/true"]
failure_delay_s = 0
max_failures_per_ip = 3

[clamd]
enabled = true
servers = CLAMD
scan_timeout_s = 20
connect_timeout_s = 2

[spamd]
servers = SPAMD
timeout_s = 20
"""


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def config(clamd: list[str], spamd: list[str]) -> str:
    return (CONFIG.replace("CHECKPW", str(CHECKPW)).replace("CLAMD", toml_list(clamd))
            .replace("SPAMD", toml_list(spamd)))


def dead_members() -> tuple[str, str]:
    """A TCP port nobody listens on, and a unix socket path nobody listens on."""
    return f"127.0.0.1:{closed_port()}", "unix:/nonexistent/mailguard-test/dead.sock"


class Site:
    """Hosts A and B on one store, and a drop-in (tcpserver + `mailguard smtpd`) in front
    of B."""

    def __init__(self, url: str, a: Daemon, b: Daemon, dropin: Tcpserver | None) -> None:
        self.url = url
        self.a = a
        self.b = b
        self.dropin = dropin
        self._clients: list[Client] = []

    def client(self, d: Daemon | Tcpserver, source: str = "127.0.0.1") -> Client:
        if isinstance(d, Daemon):
            c = Client(*d.addresses[0], source=source)
        else:
            c = Client("127.0.0.1", d.port)
        self._clients.append(c)
        assert c.reply().startswith(b"220 ")
        assert c.cmd("HELO client.test").startswith(b"250 ")
        return c

    def cli(self, *args: str) -> str:
        res = run_cli(*args, "--config", str(self.a.tmp / "mailguard.toml"),
                      "--store", self.url)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def close_clients(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()


@pytest.fixture(params=KINDS, scope="module")
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         clamd_socket: str, spamd_addr: tuple[str, int]) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp(f"hosts-{request.param}")
    port, sock = dead_members()
    toml = config([port, sock, f"unix:{clamd_socket}"],
                  [port, f"{spamd_addr[0]}:{spamd_addr[1]}"])
    with shared_store(request.param, tmp, request) as url:
        daemons: list[Daemon] = []
        dropin: Tcpserver | None = None
        try:
            for name in ("a", "b"):
                (tmp / name).mkdir()
                daemons.append(start_daemon(tmp / name, toml, store=url, upgrade=False))
            b = daemons[1]
            env = lean_env(b.control, QMAILQUEUE=str(RECORDER), RECORD_DIR=str(tmp),
                           MAILGUARD_CONFIG=str(b.tmp / "mailguard.toml"))
            dropin = start_tcpserver(tmp, LEAN_SMTPD, env)
            s = Site(url, daemons[0], b, dropin)
            yield s
            s.close_clients()
        finally:
            if dropin is not None:
                dropin.stop()
            for d in daemons:
                assert d.stop() == 0


def age_triplet(url: str, rcpt: str, by_s: float) -> None:
    """Move a triplet's first try `by_s` seconds into the past, as if that long had passed
    (the daemons run on the system clock; tests do not sleep)."""

    async def run() -> None:
        store = await Store.open(url)
        try:
            async with store.db.transaction() as conn:
                await conn.execute(update(GreylistEntry).where(GreylistEntry.rcpt == rcpt)
                                   .values(first_seen=GreylistEntry.first_seen - by_s,
                                           last_seen=GreylistEntry.last_seen - by_s))
        finally:
            await store.close()

    asyncio.run(run())


def test_greylist_retry_passes_on_another_host(site: Site) -> None:
    rcpt = "grey@example.com"
    first = site.client(site.a)
    assert first.cmd("MAIL FROM:<sender@remote.test>") == b"250 ok\r\n"
    assert first.cmd(f"RCPT TO:<{rcpt}>") == GREYLISTED
    # too early on B as well: the first try is shared
    early = site.client(site.b)
    early.cmd("MAIL FROM:<sender@remote.test>")
    assert early.cmd(f"RCPT TO:<{rcpt}>") == GREYLISTED
    age_triplet(site.url, rcpt, 400)
    assert site.dropin is not None  # the retry comes through the drop-in in front of B
    retry = site.client(site.dropin)
    assert retry.cmd("MAIL FROM:<sender@remote.test>") == b"250 ok\r\n"
    assert retry.cmd(f"RCPT TO:<{rcpt}>") == b"250 ok\r\n"
    # the pass recorded through B is seen by A (which never saw the triplet pass)
    again = site.client(site.a)
    again.cmd("MAIL FROM:<sender@remote.test>")
    assert again.cmd(f"RCPT TO:<{rcpt}>") == b"250 ok\r\n"
    # the other way round: first try through B, the retry passes on A, and the pass
    # recorded (and cached) by A lets the next mail through B
    other = "grey2@example.com"
    for d in (site.b, site.a):
        c = site.client(d)
        c.cmd("MAIL FROM:<sender@remote.test>")
        assert c.cmd(f"RCPT TO:<{other}>") == GREYLISTED
    age_triplet(site.url, other, 400)
    for d in (site.a, site.b):
        c = site.client(d)
        c.cmd("MAIL FROM:<sender@remote.test>")
        assert c.cmd(f"RCPT TO:<{other}>") == b"250 ok\r\n"


def test_per_user_limits_count_across_hosts(site: Site) -> None:
    """hard_messages = 3 per hour: two messages through A and one through B use it up
    on both."""
    sent = [site.a, site.a, site.b]
    for d in sent:
        c = site.client(d, source="127.0.0.2")  # a relay client: the user is its sender
        assert codes(c.transaction("alice@example.com", ["x@foreign.test"],
                                   body("offer"))) == [250, 250, 354, 250]
    for d in (site.a, site.b):
        c = site.client(d, source="127.0.0.2")
        assert c.cmd("MAIL FROM:<alice@example.com>") == LIMITED


def test_auth_failures_count_across_hosts(site: Site) -> None:
    """max_failures_per_ip = 3: two failures on A and one on B lock the address on both,
    the right password included."""
    for d in (site.a, site.b, site.a):
        c = site.client(d, source="127.0.0.30")
        assert c.cmd(f"AUTH PLAIN {plain('good', 'wrong')}") in (FAILED, TOO_MANY)
    for d in (site.a, site.b):
        c = site.client(d, source="127.0.0.30")
        assert c.cmd(f"AUTH PLAIN {plain('good', 'secret')}") == TOO_MANY
    c = site.client(site.b, source="127.0.0.31")  # another address logs in
    assert c.cmd(f"AUTH PLAIN {plain('good', 'secret')}") == OK


def test_an_override_applies_on_every_host_at_once(site: Site) -> None:
    for d in (site.a, site.b):
        c = site.client(d, source="127.0.0.40")
        c.cmd("MAIL FROM:<x@remote.test>")
        assert c.cmd("RCPT TO:<u@filtered.test>") == b"250 ok\r\n"
    site.cli("override", "add", "127.0.0.40", "--deny", "--reason", "abuse case 7")
    refused = (b"554 5.7.1 connections from 127.0.0.40 are refused by local policy: "
               b"abuse case 7\r\n")
    for d in (site.a, site.b):
        c = site.client(d, source="127.0.0.40")
        c.cmd("MAIL FROM:<x@remote.test>")
        assert c.cmd("RCPT TO:<u@filtered.test>") == refused
    site.cli("override", "remove", "127.0.0.40")
    for d in (site.a, site.b):
        c = site.client(d, source="127.0.0.40")
        c.cmd("MAIL FROM:<x@remote.test>")
        assert c.cmd("RCPT TO:<u@filtered.test>") == b"250 ok\r\n"


def gtube_mail(rcpt: str) -> bytes:
    return (f"From: a@example.org\r\nTo: {rcpt}\r\nSubject: offer\r\n\r\n{gtube()}\r\n"
            .encode())


def test_spam_preference_and_scanner_failover_on_every_host(site: Site) -> None:
    """The first clamd (a closed port, a socket nobody listens on) and the first spamd are
    dead: every host fails over to the live one. EICAR is refused; GTUBE is tagged once
    the domain's filtering is switched on with the CLI, at once on both hosts."""
    for i, d in enumerate((site.a, site.b)):
        c = site.client(d, source="127.0.0.50")
        replies = c.transaction("a@example.org", [f"v{i}@filtered.test"],
                                body("invoice", eicar() + b"\r\n"))
        assert replies[-1] == VIRUS
        c = site.client(d, source="127.0.0.50")
        assert codes(c.transaction("a@example.org", [f"before{i}@filtered.test"],
                                   gtube_mail(f"before{i}@filtered.test"))) == [
            250, 250, 354, 250]
        [msg] = d.spooled("filtered.test", f"before{i}")
        assert message_from_bytes(msg)["X-Spam-Flag"] is None  # filtering is off
    site.cli("domain", "spam", "on", "filtered.test")
    for i, d in enumerate((site.a, site.b)):
        c = site.client(d, source="127.0.0.50")
        assert codes(c.transaction("a@example.org", [f"s{i}@filtered.test"],
                                   gtube_mail(f"s{i}@filtered.test"))) == [250, 250, 354, 250]
        [msg] = d.spooled("filtered.test", f"s{i}")
        parsed = message_from_bytes(msg)
        assert parsed["X-Spam-Flag"] == "YES" and parsed["Subject"] == "[SPAM] offer"
        assert parsed["X-MailGuard-Virus-Scan"] == "clean"
        log = d.read_log()
        assert "event=scanner_failover scanner=clamd" in log
        assert "event=scanner_failover scanner=spamd" in log
    site.cli("domain", "spam", "off", "filtered.test")


def test_every_scanner_dead_tempfails_on_every_host(
        tmp_path: Path, make_daemon: list[Daemon]) -> None:
    port, sock = dead_members()
    toml = config([port, sock], [port, sock])
    url = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    for i, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        make_daemon.append(start_daemon(tmp_path / name, toml, store=url, upgrade=i == 0))
    for d in make_daemon:
        c = Client(*d.addresses[0], source="127.0.0.60")
        try:
            c.reply()
            replies = c.transaction("a@example.org", ["u@filtered.test"], body("hello"))
        finally:
            c.close()
        assert replies[-1].startswith(b"451 "), replies
        assert d.spooled("filtered.test", "u") == []


def test_an_override_written_by_hand_reaches_every_host_within_refresh_s(
        tmp_path: Path, make_daemon: list[Daemon], clamd_socket: str) -> None:
    """A row put into `ip_override` with SQL (no generation token, unlike the CLI and the
    admin page): each host rereads the table every `dnsbl.override_refresh_s` (5 s), so it
    is in force everywhere within 5 s (the bound docs/multi-host.md states)."""
    toml = config([f"unix:{clamd_socket}"], [])
    url = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    for i, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        make_daemon.append(start_daemon(tmp_path / name, toml, store=url, upgrade=i == 0))

    def rcpt_reply(d: Daemon) -> bytes:
        c = Client(*d.addresses[0], source="127.0.0.41")
        try:
            c.reply()
            c.cmd("HELO client.test")
            c.cmd("MAIL FROM:<x@remote.test>")
            return c.cmd("RCPT TO:<u@filtered.test>")
        finally:
            c.close()

    assert [rcpt_reply(d) for d in make_daemon] == [b"250 ok\r\n"] * 2  # copies loaded
    with sqlite3.connect(tmp_path / "shared.db") as db:
        db.execute("INSERT INTO ip_override (network, action, reason, created_ts, "
                   "created_by) VALUES ('127.0.0.41/32', 'deny', 'by hand', 0, '')")
    added = time.monotonic()
    pending = set(range(len(make_daemon)))
    while pending and time.monotonic() - added < 5 + 1:  # 1 s for the sessions themselves
        for i in sorted(pending):
            if rcpt_reply(make_daemon[i]).startswith(b"554 5.7.1 connections from 127.0.0.41"):
                pending.discard(i)
        time.sleep(0.2)
    assert not pending, f"hosts {pending} still accept after {time.monotonic() - added:.1f}s"
