"""No open relay: strangers reach local domains only; relay networks reach anyone."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.daemon_harness import Client, Daemon, body, codes

Connect = Callable[..., Client]
NOT_RCPTHOSTS = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
TRICK = (
    b"553 sorry, that address is not allowed here: relaying through %, ! or @ is refused "
    b"(#5.7.1)\r\n"
)


@pytest.mark.parametrize(
    ("rcpt", "expected"),
    [
        ("<victim@foreign.test>", NOT_RCPTHOSTS),
        ("<victim%foreign.test@example.com>", TRICK),
        ("<foreign.test!victim@example.com>", TRICK),
        ("<@example.com,@relay.test:victim@foreign.test>", NOT_RCPTHOSTS),
        ("<\"victim@foreign.test\"@example.com>", TRICK),
        ("<victim@foreign.test@example.com>", TRICK),
        ("<victim@example.com@foreign.test>", NOT_RCPTHOSTS),
        ("<victim@[192.0.2.1]>", NOT_RCPTHOSTS),
        ("<victim@example.com.>", NOT_RCPTHOSTS),
        ("<victim@EXAMPLE.COM.foreign.test>", NOT_RCPTHOSTS),
        ("<victim@sub.example.net>", NOT_RCPTHOSTS),  # ".sub.example.net" = subdomains only
        ("<victim@example.com>", b"250 ok\r\n"),
        ("<victim@EXAMPLE.com>", b"250 ok\r\n"),
        ("<victim@deep.sub.example.net>", b"250 ok\r\n"),
        ("<@relay.test:victim@example.com>", b"250 ok\r\n"),  # route stripped, local target
        ("<postmaster>", b"250 ok\r\n"),  # qualified with our own domain
    ],
)
def test_stranger_relay_attempts(daemon: Daemon, connect: Connect, rcpt: str,
                                 expected: bytes) -> None:
    c = connect(daemon)
    c.reply()
    assert c.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert c.cmd(f"RCPT TO:{rcpt}") == expected


def test_relay_network_may_relay_and_stranger_may_not(daemon: Daemon, connect: Connect) -> None:
    stranger = connect(daemon, source="127.0.0.3")
    stranger.reply()
    assert stranger.cmd("MAIL FROM:<a@example.org>") == b"250 ok\r\n"
    assert stranger.cmd("RCPT TO:<out@foreign.test>") == NOT_RCPTHOSTS
    relay = connect(daemon, source="127.0.0.2")  # relay_networks = 127.0.0.2/32
    relay.reply()
    replies = relay.transaction("a@example.com", ["out@foreign.test"], body("relayed"))
    assert codes(replies) == [250, 250, 354, 250]
    [msg] = daemon.spooled("foreign.test", "out")
    assert b"(127.0.0.2)" in msg
