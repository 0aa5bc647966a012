"""Greylisting and SPF through the real daemon: exact replies, the headers of the stored
message, and the admin commands on the daemon's store. Time windows are walked in
tests/integration/test_greylist_check.py with a frozen clock; here a retry "after the
delay" is prepared by writing the first try into the store as it would have been 400 s
ago (the daemon runs on the system clock, and tests do not sleep)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailguard.checks.greylist_rules import Decision, decide
from mailguard.settings.greylist import GreylistConfig
from mailguard.store.greylist import GreylistStore
from mailguard.store.greylist_records import ClientState, TripletState
from mailguard.store.repo import Store
from tests.e2e.conftest import BASE_CONFIG
from tests.e2e.daemon_harness import Client, Daemon, body, codes, run_cli, start_daemon

Connect = Callable[..., Client]
FIRST_TRY = b"451 4.7.1 Greylisted, please try again in 300 seconds\r\n"

CONFIG = BASE_CONFIG + """
[dns]
nameservers = ["{dns}"]
timeout_s = 2

[spf]
fail = "reject"

[checks.spf]
mode = "enforce"

[checks.greylist]
mode = "enforce"
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory,
           dns_server: tuple[str, int]) -> Iterator[Daemon]:
    host, port = dns_server
    d = start_daemon(tmp_path_factory.mktemp("grey"), CONFIG.replace("{dns}", f"{host}:{port}"))
    yield d
    assert d.stop() == 0


def store_url(d: Daemon) -> str:
    return f"sqlite+aiosqlite:///{d.tmp}/mailguard.db"


def cli(d: Daemon, *args: str) -> tuple[int, str, str]:
    res = run_cli("greylist", *args, "--config", str(d.tmp / "mailguard.toml"),
                  "--store", store_url(d))
    return res.returncode, res.stdout, res.stderr


def first_try_in_the_past(d: Daemon, key: str, sender: str, rcpt: str, ago_s: float) -> None:
    """Record a first try `ago_s` seconds ago, as the daemon would have."""

    def first(entry: TripletState | None, client: ClientState | None
              ) -> tuple[TripletState | None, ClientState | None, Decision]:
        got = decide(None, None, time.time() - ago_s, GreylistConfig())
        return got.entry, None, got

    async def run() -> None:
        store = await Store.open(store_url(d))
        try:
            await GreylistStore(store.db).update(key, sender, rcpt, first)
        finally:
            await store.close()

    asyncio.run(run())


def test_first_try_is_deferred_and_relay_clients_are_exempt(daemon: Daemon,
                                                            connect: Connect) -> None:
    c = connect(daemon, source="127.0.5.1")
    c.reply()
    assert c.cmd("EHLO client.test").startswith(b"250-mx.test")
    assert c.cmd("MAIL FROM:<alice@pass.spf.test>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<bob@example.com>") == FIRST_TRY
    assert c.cmd("RCPT TO:<bob@example.com>") == FIRST_TRY  # the same second: 300 left
    assert c.cmd("DATA") == b"503 RCPT first (#5.5.1)\r\n"
    assert c.cmd("QUIT") == b"221 mx.test\r\n"
    relay = connect(daemon, source="127.0.0.2")  # relay_networks
    relay.reply()
    relay.cmd("EHLO relay.test")
    assert codes(relay.transaction("alice@pass.spf.test", ["bob@example.com"],
                                   body("relayed"))) == [250, 250, 354, 250]
    log = daemon.wait_log("client=127.0.5.1 ")
    [line] = [x for x in log.splitlines() if "client=127.0.5.1 " in x]
    assert "refused=\"bob@example.com=451,bob@example.com=451\"" in line, line
    assert "spf=pass" in line and "greylist=fail" in line, line


def test_retry_after_the_delay_is_accepted_with_headers(daemon: Daemon,
                                                        connect: Connect) -> None:
    first_try_in_the_past(daemon, "127.0.6.0/24", "carol@pass.spf.test", "dave@example.com",
                          ago_s=400)
    c = connect(daemon, source="127.0.6.77")  # another address of the same /24
    c.reply()
    c.cmd("EHLO client.test")
    replies = c.transaction("Carol+news@pass.spf.test", ["dave@example.com"], body("retry"))
    assert codes(replies) == [250, 250, 354, 250]
    [msg] = daemon.spooled("example.com", "dave")
    head = msg.split(b"\n\n", 1)[0].decode()
    lines = head.split("\n")
    i = next(n for n, line in enumerate(lines) if line.startswith("Received-SPF:"))
    assert lines[i] == (
        "Received-SPF: pass (mx.test: domain of pass.spf.test designates 127.0.6.77 as "
        'permitted sender) client-ip=127.0.6.77; envelope-from="Carol+news@pass.spf.test"; '
        "helo=client.test; identity=mailfrom;")
    assert lines[i + 1] == "Authentication-Results: mx.test; spf=pass smtp.mailfrom=pass.spf.test"
    assert re.fullmatch(
        r"X-Greylist: delayed 4\d\d seconds by mailguard-\d+\.\d+\.\d+; "
        r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", lines[i + 2]), lines[i + 2]
    assert [line for line in lines if line.startswith("X-Greylist")] == [lines[i + 2]]


def test_spf_fail_is_rejected_when_configured_and_enforced(daemon: Daemon,
                                                           connect: Connect) -> None:
    c = connect(daemon, source="127.0.7.1")
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<x@fail.spf.test>") == (
        b"550 5.7.23 SPF validation failed: SPF fail - not authorized\r\n")
    assert c.cmd("RCPT TO:<bob@example.com>") == b"503 MAIL first (#5.5.1)\r\n"
    assert c.cmd("MAIL FROM:<x@softfail.spf.test>") == b"250 ok\r\n"  # softfail: tag
    # the refused MAIL still has its summary line, with the decisive check's detail
    log = daemon.wait_log("client=127.0.7.1 ")
    [line] = [x for x in log.splitlines() if "client=127.0.7.1 " in x]
    assert ' from=<x@fail.spf.test> rcpts="" refused="" size=0 result=rejected reply=550 ' \
        'queue_id="" checks="dnsbl=pass spf=fail(fail for fail.spf.test)"' in line, line


def test_admin_commands(daemon: Daemon, connect: Connect) -> None:
    c = connect(daemon, source="127.0.8.1")
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<erin@none.spf.test>")
    assert c.cmd("RCPT TO:<frank@example.com>") == FIRST_TRY
    code, out, _ = cli(daemon, "list", "--limit", "100")
    assert code == 0
    assert re.search(r"^127\.0\.8\.0/24\s+erin@none\.spf\.test\s+frank@example\.com\s+"
                     r"\S+ \S+\s+\S+ \S+\s+pending \(1 deferrals\)$", out, re.M), out
    code, out, _ = cli(daemon, "stats")
    assert code == 0 and re.match(r"triplets: \d+ \(passed \d+, pending \d+\)\n"
                                  r"clients: \d+ \(whitelisted \d+, auto_whitelist_after 5\)\n$",
                                  out), out
    code, out, _ = cli(daemon, "allow", "127.0.9.33")
    assert (code, out) == (0, "whitelisted 127.0.9.0/24 (passes 5)\n")
    w = connect(daemon, source="127.0.9.1")
    w.reply()
    w.cmd("EHLO client.test")
    assert codes(w.transaction("gina@none.spf.test", ["hank@example.com"],
                               body("whitelisted"))) == [250, 250, 354, 250]
    code, _, err = cli(daemon, "allow", "10.0.0.0/16")
    assert code == 2 and "keys clients on /24" in err
    code, out, _ = cli(daemon, "purge", "--older-than", "1s")
    assert code == 0 and re.fullmatch(r"purged [1-9]\d* triplets, [1-9]\d* clients\n", out), out
    code, out, _ = cli(daemon, "stats")
    assert out.startswith("triplets: 0 (passed 0, pending 0)\n"), out


def test_greylisting_is_off_unless_configured(make_daemon: list[Daemon], connect: Connect,
                                              tmp_path: Path) -> None:
    d = start_daemon(tmp_path, BASE_CONFIG)
    make_daemon.append(d)
    c = connect(d, source="127.0.10.1")
    c.reply()
    assert codes(c.transaction("a@example.org", ["b@example.com"], body("plain"))) == [
        250, 250, 354, 250]
    [msg] = d.spooled("example.com", "b")
    assert b"Received-SPF" not in msg and b"X-Greylist" not in msg
