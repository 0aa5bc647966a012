"""DNS blocklists through the real daemon, the real rbldnsd (tests/data/dns) and the real
`mailguard override` command, from several 127.x source addresses.

bl.test lists 127.0.0.2 (TXT "Listed in bl.test (127.0.0.2)"), 127.0.0.11 (127.0.0.3,
"listed loopback 11") and answers 127.255.255.254 ("query refused") for 127.0.0.10."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailguard.cli.main import main
from tests.e2e.daemon_harness import Client, Daemon, body, codes, run_cli, start_daemon

Connect = Callable[..., Client]

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{tmp}/spool"

[dns]
nameservers = ["%(dns)s"]
timeout_s = %(timeout)s

[dnsbl]
override_refresh_s = 0  # the CLI's changes apply to the next connection

[[dnsbl.zones]]
zone = "bl.test"
on_error = "%(on_error)s"
"""
LISTED_11 = b"553 5.7.1 listed loopback 11\r\n"
RCPT_FIRST = b"503 RCPT first (#5.5.1)\r\n"


@pytest.fixture(scope="module")
def rbl_daemon(tmp_path_factory: pytest.TempPathFactory,
               dns_server: tuple[str, int]) -> Iterator[Daemon]:
    host, port = dns_server
    config = CONFIG % {"dns": f"{host}:{port}", "timeout": 2, "on_error": "open"}
    d = start_daemon(tmp_path_factory.mktemp("dnsbl"), config)
    yield d
    assert d.stop() == 0


def _store(d: Daemon) -> str:
    return f"sqlite+aiosqlite:///{d.tmp}/mailguard.db"


def _session(c: Client) -> None:
    assert c.reply() == b"220 mx.test ESMTP\r\n"
    assert c.cmd("HELO client.test") == b"250 mx.test\r\n"
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"


def test_listed_client_is_refused_at_rcpt_but_reaches_postmaster(
        rbl_daemon: Daemon, connect: Connect) -> None:
    c = connect(rbl_daemon, source="127.0.0.11")
    _session(c)  # greeting, HELO and MAIL as usual (as under rblsmtpd)
    assert c.cmd("RCPT TO:<user@example.com>") == LISTED_11
    assert c.cmd("DATA") == RCPT_FIRST  # no recipient accepted
    assert c.cmd("RCPT TO:<Postmaster@example.com>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<abuse@example.com>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<postmaster>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<postmaster@foreign.test>") == (
        b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n")
    assert c.cmd("DATA") == b"354 go ahead\r\n"
    c.send(body("listed but to postmaster") + b".\r\n")
    assert c.reply().startswith(b"250 ok ")
    assert len(rbl_daemon.spooled("example.com", "postmaster")) == 1
    assert len(rbl_daemon.spooled("example.com", "user")) == 0
    log = rbl_daemon.wait_log('refused="user@example.com=553,postmaster@foreign.test=553"')
    [line] = [x for x in log.splitlines() if "client=127.0.0.11 " in x]
    assert 'checks="dnsbl=fail(listed bl.test 127.0.0.3) limits=pass badmailfrom=pass ' \
        "relay=fail(" in line, line  # the decisive check's detail, each check once


def test_unlisted_and_error_answer_clients_pass(rbl_daemon: Daemon, connect: Connect) -> None:
    for source in ("127.0.0.5", "127.0.0.10"):  # not listed; 127.255.255.254 = an error
        c = connect(rbl_daemon, source=source)
        _session(c)
        assert c.cmd("RCPT TO:<user@example.com>") == b"250 ok\r\n", source
    rbl_daemon.wait_log("event=dnsbl_error zone=bl.test client=127.0.0.10 "
                        "error='error answer 127.255.255.254' on_error=open")


def test_override_commands_change_the_verdict(rbl_daemon: Daemon, connect: Connect,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    store = _store(rbl_daemon)
    c = connect(rbl_daemon, source="127.0.0.2")
    _session(c)
    assert c.cmd("RCPT TO:<user@example.com>") == b"553 5.7.1 Listed in bl.test (127.0.0.2)\r\n"

    # the real command once; then in-process (same code, no interpreter start-up)
    res = run_cli("override", "add", "127.0.0.2", "--allow", "--reason", "partner",
                  "--store", store)
    assert (res.returncode, res.stdout) == (0, "allow 127.0.0.2/32\n")
    assert main(["override", "add", "127.0.0.6", "--deny", "--reason", "abuse case 12",
                 "--expires", "1h", "--store", store]) == 0

    allowed = connect(rbl_daemon, source="127.0.0.2")
    _session(allowed)
    replies = [allowed.cmd("RCPT TO:<allowed@example.com>"), allowed.cmd("DATA")]
    allowed.send(body("allowed by override") + b".\r\n")
    replies.append(allowed.reply())
    assert codes(replies) == [250, 354, 250]
    assert len(rbl_daemon.spooled("example.com", "allowed")) == 1

    denied = connect(rbl_daemon, source="127.0.0.6")  # not listed anywhere, but denied
    _session(denied)
    assert denied.cmd("RCPT TO:<user@example.com>") == (
        b"554 5.7.1 connections from 127.0.0.6 are refused by local policy: abuse case 12\r\n")
    assert denied.cmd("RCPT TO:<postmaster@example.com>") == b"250 ok\r\n"

    capsys.readouterr()
    assert main(["override", "list", "--store", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NETWORK", "ACTION", "EXPIRES", "CREATED", "BY", "REASON"]
    assert lines[1].startswith("127.0.0.2/32  allow   never")
    assert lines[1].endswith("partner")
    assert lines[2].startswith("127.0.0.6/32  deny") and lines[2].endswith("abuse case 12")
    assert main(["override", "remove", "127.0.0.2", "--store", store]) == 0
    capsys.readouterr()
    assert main(["override", "remove", "127.0.0.2", "--store", store]) == 1
    assert capsys.readouterr().err == "mailguard: no override for 127.0.0.2\n"
    assert main(["override", "add", "127.0.0.0/8x", "--deny", "--store", store]) == 2
    assert capsys.readouterr().err == "mailguard: '127.0.0.0/8x' is not an IP network (CIDR)\n"
    again = connect(rbl_daemon, source="127.0.0.2")  # the allow is gone: listed again
    _session(again)
    assert again.cmd("RCPT TO:<user@example.com>") == (
        b"553 5.7.1 Listed in bl.test (127.0.0.2)\r\n")


def test_dns_timeout_with_tempfail_zone(tmp_path: Path, make_daemon: list[Daemon],
                                        connect: Connect) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        config = CONFIG % {"dns": f"127.0.0.1:{port}", "timeout": 0.3, "on_error": "tempfail"}
        d = start_daemon(tmp_path, config)
        make_daemon.append(d)
        c = connect(d, source="127.0.0.5")
        _session(c)
        assert c.cmd("RCPT TO:<user@example.com>") == b"451 temporary RBL lookup error\r\n"
        assert c.cmd("RCPT TO:<postmaster@example.com>") == b"250 ok\r\n"
        d.wait_log("event=dnsbl_error zone=bl.test client=127.0.0.5 error='dns: "
                   "5.0.0.127.bl.test A: timed out after 0.3s' on_error=tempfail")


def test_listed_ipv6_client_is_refused_at_rcpt(tmp_path: Path, make_daemon: list[Daemon],
                                               connect: Connect,
                                               dns_server: tuple[str, int]) -> None:
    """bl.test's ip6trie lists ::1 (127.0.0.6, TXT "listed IPv6 loopback"): looked up
    nibble-reversed, refused at RCPT, postmaster@ still reached."""
    host, port = dns_server
    config = CONFIG % {"dns": f"{host}:{port}", "timeout": 2, "on_error": "open"}
    d = start_daemon(tmp_path, config.replace('listen = ["127.0.0.1:0"]', 'listen = ["[::1]:0"]'))
    make_daemon.append(d)
    c = connect(d)  # from ::1
    _session(c)
    assert c.cmd("RCPT TO:<user@example.com>") == b"553 5.7.1 listed IPv6 loopback\r\n"
    assert c.cmd("RCPT TO:<postmaster@example.com>") == b"250 ok\r\n"
    assert c.cmd("DATA") == b"354 go ahead\r\n"
    c.send(body("v6 to postmaster") + b".\r\n")
    assert c.reply().startswith(b"250 ok ")
    log = d.wait_log("client=::1 ")
    [line] = [x for x in log.splitlines() if "client=::1 " in x]
    assert 'refused="user@example.com=553" size=' in line, line
    assert 'result=accepted reply=250' in line, line
    assert 'checks="dnsbl=fail(listed bl.test 127.0.0.6) ' in line, line


def test_listed_client_gets_the_block_reply_before_greylisting_and_tarpit(
        tmp_path: Path, make_daemon: list[Daemon], connect: Connect,
        dns_server: tuple[str, int]) -> None:
    """A recipient that the deferred refusal will refuse is neither greylisted nor
    tarpitted first; mail from the listed client to postmaster@ is not delayed."""
    host, port = dns_server
    config = CONFIG % {"dns": f"{host}:{port}", "timeout": 2, "on_error": "open"}
    config += "\n[checks.greylist]\nmode = \"enforce\"\n\n[tarpit]\ncount = 1\ndelay_s = 3\n"
    d = start_daemon(tmp_path, config)
    make_daemon.append(d)
    c = connect(d, source="127.0.0.11")
    _session(c)
    started = time.monotonic()
    assert c.cmd("RCPT TO:<user@example.com>") == LISTED_11
    assert c.cmd("RCPT TO:<postmaster@example.com>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<abuse@example.com>") == b"250 ok\r\n"  # 2nd accepted: no tarpit
    assert time.monotonic() - started < 2.5
    stranger = connect(d, source="127.0.0.5")  # not listed: greylisted as usual
    _session(stranger)
    assert stranger.cmd("RCPT TO:<user@example.com>") == (
        b"451 4.7.1 Greylisted, please try again in 300 seconds\r\n")
