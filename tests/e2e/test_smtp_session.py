"""The daemon's SMTP dialogue, byte for byte against qmail-smtpd's replies."""

from __future__ import annotations

import smtplib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import BASE_CONFIG
from tests.e2e.daemon_harness import Client, Daemon, body, codes, start_daemon

Connect = Callable[..., Client]


def test_greeting_ehlo_and_ordinary_delivery(daemon: Daemon, connect: Connect) -> None:
    c = connect(daemon)
    assert c.reply() == b"220 mx.test ESMTP\r\n"
    assert c.cmd("EHLO client.test") == (
        b"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 5000\r\n250 SMTPUTF8\r\n"
    )
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<ordinary@example.com>") == b"250 ok\r\n"
    assert c.cmd("DATA") == b"354 go ahead\r\n"
    c.send(body("ordinary", b"..leading dot\r\n"))
    c.send(b".\r\n")
    final = c.reply()
    assert final.startswith(b"250 ok ") and b" qp " in final
    assert c.cmd("QUIT") == b"221 mx.test\r\n"
    assert c.closed_by_peer()
    [msg] = daemon.spooled("example.com", "ordinary")
    assert msg.startswith(b"Return-Path: <a@example.org>\nDelivered-To: ordinary@example.com\n")
    assert (
        b"Received: from unknown (HELO client.test) (127.0.0.1)\n  by mx.test with ESMTP; " in msg
    )
    assert b"\n.leading dot\n" in msg  # dot-stuffing undone, CRLF stored as LF
    assert b"\r" not in msg
    log = daemon.wait_log("rcpts=ordinary@example.com")
    [line] = [x for x in log.splitlines() if "rcpts=ordinary@example.com" in x]
    assert (
        "result=accepted" in line and "client=127.0.0.1" in line and "from=<a@example.org>" in line
    )


def test_qmail_replies_for_out_of_order_and_unknown_commands(
    daemon: Daemon, connect: Connect
) -> None:
    c = connect(daemon)
    c.reply()
    assert c.cmd("RCPT TO:<x@example.com>") == b"503 MAIL first (#5.5.1)\r\n"
    assert c.cmd("DATA") == b"503 MAIL first (#5.5.1)\r\n"
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert c.cmd("DATA") == b"503 RCPT first (#5.5.1)\r\n"
    assert c.cmd("RSET") == b"250 flushed\r\n"
    assert c.cmd("NOOP") == b"250 ok\r\n"
    assert c.cmd("VRFY someone") == b"252 send some mail, i'll try my best\r\n"
    for unknown in ("EXPN list", "BDAT 10", "XYZZY", "", "STARTTLS"):
        assert c.cmd(unknown) == b"502 unimplemented (#5.5.1)\r\n", unknown
    assert c.cmd("HELO client") == b"250 mx.test\r\n"
    assert c.cmd(b"MAIL FROM:<" + b"a" * 950 + b"@example.org>") == b"555 syntax error (#5.5.4)\r\n"
    assert c.cmd(b"NOOP " + b"x" * 5000) == b"500 command line too long (#5.5.2)\r\n"
    assert c.cmd("NOOP") == b"250 ok\r\n"  # the session goes on
    assert c.cmd("MAIL FROM:<a\0b@example.org>") == b"555 syntax error (#5.5.4)\r\n"
    c.close()


def test_pipelined_session_is_answered_in_order(daemon: Daemon, connect: Connect) -> None:
    c = connect(daemon)
    c.reply()
    c.cmd("EHLO pipe.test")
    c.send(
        b"MAIL FROM:<p@example.org>\r\nRCPT TO:<pipe1@example.com>\r\n"
        b"RCPT TO:<nobody@foreign.test>\r\nRCPT TO:<pipe2@example.com>\r\nDATA\r\n"
    )
    replies = [c.reply() for _ in range(5)]
    assert replies == [
        b"250 ok\r\n",
        b"250 ok\r\n",
        b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n",
        b"250 ok\r\n",
        b"354 go ahead\r\n",
    ]
    c.send(
        body("pipelined") + b".\r\nMAIL FROM:<q@example.org>\r\nRCPT TO:<pipe1@example.com>\r\n"
        b"RSET\r\nQUIT\r\n"
    )
    after = [c.reply() for _ in range(5)]
    assert codes(after) == [250, 250, 250, 250, 221]
    assert after[3] == b"250 flushed\r\n"
    assert len(daemon.spooled("example.com", "pipe1")) == 1
    assert len(daemon.spooled("example.com", "pipe2")) == 1


def test_oversized_message_gets_552_after_reading_and_session_continues(
    daemon: Daemon, connect: Connect
) -> None:
    c = connect(daemon)
    c.reply()
    replies = c.transaction(
        "a@example.org", ["big@example.com"], body("big", b"x" * 6000 + b"\r\n")
    )
    assert replies[-1] == b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
    assert daemon.spooled("example.com", "big") == []
    ok = c.transaction("a@example.org", ["big@example.com"], body("small"))
    assert codes(ok) == [250, 250, 354, 250]
    assert c.cmd("MAIL FROM:<a@example.org> SIZE=9000") == (
        b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
    )
    c.close()


@pytest.mark.parametrize(
    "data",
    [
        b"Subject: x\nbare LF in the headers\r\n",
        b"Subject: x\r\n\r\nbody\r\n\n.\r\n",  # the SMTP smuggling shape
        b"Subject: x\r\n\r\nends with a bare LF dot\r\n.\n",
    ],
)
def test_bare_lf_gets_451_and_close(daemon: Daemon, connect: Connect, data: bytes) -> None:
    c = connect(daemon)
    c.reply()
    replies = [c.cmd("MAIL FROM:<a@example.org>"), c.cmd("RCPT TO:<lf@example.com>"), c.cmd("DATA")]
    assert codes(replies) == [250, 250, 354]
    c.send(data + b".\r\n")  # a dot the daemon must never reach
    assert c.reply() == b"451 See https://cr.yp.to/docs/smtplf.html.\r\n"
    assert c.closed_by_peer()
    assert daemon.spooled("example.com", "lf") == []


def test_loop_of_100_hops_is_refused(daemon: Daemon, connect: Connect) -> None:
    c = connect(daemon)
    c.reply()
    hops = b"".join(b"Received: from hop%d by x\r\n" % i for i in range(60))
    hops += b"".join(b"Delivered-To: x%d@example.com\r\n" % i for i in range(40))
    replies = c.transaction("a@example.org", ["loop@example.com"], hops + b"\r\nbody\r\n")
    assert replies[-1] == b"554 too many hops, this message is looping (#5.4.6)\r\n"
    fewer = b"Received: x\r\n" * 99 + b"\r\nbody\r\n"
    assert codes(c.transaction("a@example.org", ["loop@example.com"], fewer))[-1] == 250
    c.close()


def test_badmailfrom_refuses_each_rcpt(daemon: Daemon, connect: Connect) -> None:
    c = connect(daemon)
    c.reply()
    for sender in ("spammer@bad.test", "SPAMMER@Bad.Test", "anyone@evil.test"):
        assert c.cmd(f"MAIL FROM:<{sender}>") == b"250 ok\r\n"
        assert c.cmd("RCPT TO:<u@example.com>") == (
            b"553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)\r\n"
        )
    c.close()


def test_8bit_nul_and_bare_cr_are_stored_unchanged(daemon: Daemon, connect: Connect) -> None:
    c = connect(daemon)
    c.reply()
    raw = "Subject: caf\u00e9\r\n\r\nNUL:\0 CR:\r mid\r\n".encode()
    assert codes(c.transaction("a@example.org", ["eight@example.com"], raw))[-1] == 250
    [msg] = daemon.spooled("example.com", "eight")
    assert msg.endswith("Subject: caf\u00e9\n\nNUL:\0 CR:\r mid\n".encode())


def test_smtplib_and_swaks_deliver(daemon: Daemon, connect: Connect) -> None:
    with smtplib.SMTP(daemon.host, daemon.port, timeout=10) as s:
        s.send_message(
            __import__("email").message_from_string("Subject: via smtplib\n\nhi\n"),
            from_addr="a@example.org",
            to_addrs=["lib@example.com"],
        )
    assert len(daemon.spooled("example.com", "lib")) == 1
    res = subprocess.run(
        [
            "swaks",
            "--server",
            f"{daemon.host}:{daemon.port}",
            "--from",
            "a@example.org",
            "--to",
            "swaks@example.com",
            "--pipeline",
            "--silent",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    [msg] = daemon.spooled("example.com", "swaks")
    assert b"X-Mailer: swaks" in msg and b"Received: from unknown" in msg


def test_without_databytes_the_memory_cap_still_applies(
    tmp_path: Path, connect: Connect
) -> None:
    cfg = BASE_CONFIG.replace("databytes = 5000", "databytes = 0\nmax_message_bytes = 3000")
    d = start_daemon(tmp_path, cfg)
    try:
        c = connect(d)
        c.reply()
        assert c.cmd("EHLO x").endswith(b"250-SIZE\r\n250 SMTPUTF8\r\n")  # no declared limit
        big_body = body("big", b"y" * 4000 + b"\r\n")
        big = c.transaction("a@example.org", ["cap@example.com"], big_body)
        assert big[-1] == b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
        assert codes(c.transaction("a@example.org", ["cap@example.com"], body("ok")))[-1] == 250
        assert len(d.spooled("example.com", "cap")) == 1
    finally:
        d.stop()


def test_undeliverable_recipients_are_refused_at_rcpt(daemon: Daemon, connect: Connect) -> None:
    """Addresses the Maildir spool cannot name are refused at RCPT with a permanent reply:
    accepted, they failed the message with 451 for every recipient on every retry."""
    too_long = b"553 5.1.3 sorry, that mailbox name is too long for this server\r\n"
    c = connect(daemon, source="127.0.0.2")  # a relay client: <a@> passes rcpthosts
    c.reply()
    assert c.cmd("EHLO client.test").startswith(b"250")
    assert c.cmd("MAIL FROM:<s@example.org> SMTPUTF8") == b"250 ok\r\n"
    assert c.cmd("RCPT TO:<" + "l" * 300 + "@example.com>") == too_long
    assert c.cmd("RCPT TO:<" + "é" * 100 + "@example.com>") == too_long
    assert c.cmd("RCPT TO:<a@>") == (
        b"553 5.1.3 sorry, that recipient address has no domain\r\n")
    assert c.cmd("RCPT TO:<" + "l" * 80 + "@example.com>") == b"250 ok\r\n"  # still fits
    assert c.cmd("RCPT TO:<fine@example.com>") == b"250 ok\r\n"
    assert c.cmd("DATA") == b"354 go ahead\r\n"
    c.send(body("undeliverable co-recipients") + b".\r\n")
    assert c.reply().startswith(b"250 ok ")
    [msg] = daemon.spooled("example.com", "fine")
    assert msg.endswith(body("undeliverable co-recipients").replace(b"\r\n", b"\n"))
    assert len(daemon.spooled("example.com", "l" * 80)) == 1
