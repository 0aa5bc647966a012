"""Helpers of the greylisting integration tests: one RCPT through a check with a real
Session and Transaction."""

from __future__ import annotations

import ipaddress

from mailguard.clock import FrozenClock
from mailguard.context import Session, Transaction
from mailguard.pipeline import Check
from mailguard.verdict import Stage, Verdict


def session(clock: FrozenClock, ip: str, sender: str, *, helo: str = "client.example",
            relay: bool = False, auth: str = "") -> Session:
    """A session of client `ip` with a transaction from `sender` (MAIL done)."""
    s = Session(ipaddress.ip_address(ip), 40000, clock, helo=helo, relay_client=relay,
                auth_user=auth)
    s.transaction = Transaction(sender)
    return s


async def rcpt(check: Check, s: Session, addr: str) -> Verdict:
    """Run the check at RCPT for `addr` on the session's transaction."""
    assert s.transaction is not None
    s.transaction.rcpt = addr
    return await check.evaluate(Stage.RCPT, s)
