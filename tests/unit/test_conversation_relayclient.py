"""RELAYCLIENT's value and recipients without a domain, through the real Conversation:
qmail-smtpd appends the value to the address as given, and qmail qualifies the result
later (`<postmaster>` with RELAYCLIENT="-x" is `postmaster-x@<me>`, never
`postmaster@<me>-x`, a domain that does not exist)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mailguard.checks.relay import RelayCheck
from mailguard.clock import FrozenClock
from mailguard.config import load
from mailguard.context import Session
from mailguard.delivery.maildir import MaildirDelivery, MaildirSpool
from mailguard.frontend.conversation import Conversation
from mailguard.frontend.services import Services
from mailguard.metrics import Metrics
from mailguard.pipeline import Pipeline
from mailguard.policy import CheckPolicy, Mode


@pytest.mark.parametrize(
    ("rcpt", "suffix", "stored"),
    [
        ("<postmaster>", "-x", "postmaster-x@mx.test"),
        ("<postmaster>", "", "postmaster@mx.test"),
        ("<u@foreign.test>", "-x", "u@foreign.test-x"),  # qmail's own (odd) result
        ("<u@foreign.test>", "-relay", "u@foreign.test-relay"),  # appended as is
        ("<u@foreign.test>", "", "u@foreign.test"),  # the usual RELAYCLIENT=""
    ],
)
async def test_relayclient_suffix_then_qualification(
    tmp_path: Path, rcpt: str, suffix: str, stored: str
) -> None:
    config = load(None, {"server": {"hostname": "mx.test", "local_domains": ["example.com"]}})
    clock = FrozenClock()
    metrics = Metrics()
    delivery = MaildirDelivery(MaildirSpool(tmp_path / "spool", clock), clock)
    services = Services.build(config, clock=clock, metrics=metrics,
                              pipeline=Pipeline([], metrics), delivery=delivery)
    services.pipeline = Pipeline(
        [(RelayCheck(services.is_local_domain), CheckPolicy(mode=Mode.ENFORCE))], metrics
    )
    session = Session(ipaddress.ip_address("192.0.2.9"), 4321, clock, relay_client=True,
                      relay_suffix=suffix, session_id="rc")
    conv = Conversation(services, session)
    await conv.mail("<a@example.org>")
    assert str((await conv.rcpt(rcpt)).reply) == "250 ok"
    tx = session.transaction
    assert tx is not None and tx.rcpts == [stored]
