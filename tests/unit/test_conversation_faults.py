"""Faults inside a transaction, through the real Conversation and Pipeline: a bug in a
check or in a hand-over must end in a logged 4xx (never a dead session or a silent
close), and a hand-over that outlives its session must still get its true summary line."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from mailguard.body import Body, Message, SpoolFile
from mailguard.checks.relay import RelayCheck
from mailguard.clock import FrozenClock
from mailguard.config import load
from mailguard.context import Session, Transaction
from mailguard.delivery.base import Delivered, Delivery
from mailguard.delivery.maildir import MaildirDelivery, MaildirSpool
from mailguard.frontend.conversation import Conversation, Data
from mailguard.frontend.services import Services
from mailguard.metrics import Metrics
from mailguard.pipeline import Check, Pipeline
from mailguard.policy import CheckPolicy, Mode, OnError
from mailguard.verdict import Reply, Stage, Verdict

MESSAGE = b"From: a@example.org\nSubject: faults\n\nhello\n"
TEMPFAIL = "451 4.3.0 temporary failure, please try again later"


class BuggyCheck:
    """A check with a programming error (not a service failure) at RCPT."""

    name = "buggy"
    stages = frozenset({Stage.RCPT})

    async def evaluate(self, stage: Stage, session: Session) -> Verdict:
        raise KeyError("a bug")


class BrokenDelivery:
    """A hand-over raising something its callers do not expect."""

    async def deliver(self, sender: str, rcpts: Sequence[str], message: Message, *,
                      authenticated: bool = False) -> Delivered:
        raise RuntimeError("delivery bug")


class GatedDelivery:
    """The Maildir hand-over, held until `gate` is set (a slow disk or qmail-queue)."""

    def __init__(self, inner: Delivery) -> None:
        self.inner = inner
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def deliver(self, sender: str, rcpts: Sequence[str], message: Message, *,
                      authenticated: bool = False) -> Delivered:
        self.started.set()
        await self.gate.wait()
        return await self.inner.deliver(sender, rcpts, message)


def services_with(tmp_path: Path, checks: list[tuple[Check, CheckPolicy]],
                  delivery: Delivery | None = None) -> Services:
    config = load(None, {"server": {"hostname": "mx.test", "local_domains": ["example.com"]}})
    clock = FrozenClock()
    metrics = Metrics()
    delivery = delivery or MaildirDelivery(MaildirSpool(tmp_path / "spool", clock), clock)
    services = Services.build(config, clock=clock, metrics=metrics,
                              pipeline=Pipeline([], metrics), delivery=delivery)
    relay = (RelayCheck(services.is_local_domain), CheckPolicy(mode=Mode.ENFORCE))
    services.pipeline = Pipeline([*checks, relay], metrics)
    return services


def conversation(services: Services) -> Conversation:
    session = Session(ipaddress.ip_address("192.0.2.9"), 4321, services.clock,
                      session_id="faults")
    return Conversation(services, session)


def summary(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "event=transaction" in r.getMessage()]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (CheckPolicy(mode=Mode.ENFORCE), TEMPFAIL),  # fail closed: the default
        (CheckPolicy(mode=Mode.ENFORCE, on_error=OnError.OPEN), "250 ok"),
        (CheckPolicy(mode=Mode.LOG), "250 ok"),  # a shadow check never stops mail
    ],
)
async def test_a_bug_in_a_check_follows_its_failure_policy_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, policy: CheckPolicy, expected: str
) -> None:
    conv = conversation(services_with(tmp_path, [(BuggyCheck(), policy)]))
    assert str((await conv.mail("<a@example.org>")).reply) == "250 ok"
    with caplog.at_level(logging.INFO):
        step = await conv.rcpt("<joe@example.com>")
    assert str(step.reply) == expected
    assert not step.close
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and errors[0].exc_info is not None  # the traceback reaches the log
    assert "check=buggy" in errors[0].getMessage()


async def test_a_delivery_that_raises_gets_451_and_the_session_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    services = services_with(tmp_path, [], BrokenDelivery())
    conv = conversation(services)
    await conv.mail("<a@example.org>")
    await conv.rcpt("<joe@example.com>")
    with caplog.at_level(logging.INFO):
        step = await conv.data_end(Data(Body(MESSAGE), len(MESSAGE), False, 0))
    assert str(step.reply) == "451 local error, please try again later (#4.3.0)"
    assert not step.close
    assert conv.session.transaction is None
    [line] = summary(caplog)
    assert "result=tempfail reply=451" in line
    assert any(r.exc_info and "delivery bug" in str(r.exc_info[1]) for r in caplog.records)
    assert str((await conv.mail("<a@example.org>")).reply) == "250 ok"  # usable again


async def test_a_hand_over_outliving_its_session_logs_its_real_outcome(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FrozenClock()
    delivery = GatedDelivery(MaildirDelivery(MaildirSpool(tmp_path / "spool", clock), clock))
    services = services_with(tmp_path, [], delivery)
    conv = conversation(services)
    await conv.mail("<a@example.org>")
    await conv.rcpt("<joe@example.com>")
    with caplog.at_level(logging.INFO):
        session_task = asyncio.ensure_future(
            conv.data_end(Data(Body(MESSAGE), len(MESSAGE), False, 0))
        )
        await delivery.started.wait()
        session_task.cancel()  # the client vanished; the protocol cancels the session
        with pytest.raises(asyncio.CancelledError):
            await session_task
        conv.closed()  # what the protocol does on the way out
        assert summary(caplog) == []  # not "aborted": the outcome is not known yet
        delivery.gate.set()
        await services.drain()
    [line] = summary(caplog)
    assert "result=accepted reply=250" in line and 'queue_id=""' not in line
    assert len(list((tmp_path / "spool" / "example.com" / "joe" / "new").iterdir())) == 1


async def test_a_failed_hand_over_outliving_its_session_is_logged_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Refusing(GatedDelivery):
        async def deliver(self, sender: str, rcpts: Sequence[str], message: Message, *,
                          authenticated: bool = False) -> Delivered:
            self.started.set()
            await self.gate.wait()
            return Delivered(False, Reply(451, "qq write error or disk full (#4.3.0)"))

    delivery = Refusing(BrokenDelivery())
    services = services_with(tmp_path, [], delivery)
    conv = conversation(services)
    await conv.mail("<a@example.org>")
    await conv.rcpt("<joe@example.com>")
    with caplog.at_level(logging.INFO):
        task = asyncio.ensure_future(conv.data_end(Data(Body(MESSAGE), len(MESSAGE), False, 0)))
        await delivery.started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        conv.closed()
        delivery.gate.set()
        await services.drain()
    [line] = summary(caplog)
    assert "result=tempfail reply=451" in line


def spooled(tmp_path: Path, data: bytes) -> Body:
    f = SpoolFile(str(tmp_path / "incoming"))
    f.append(data)
    return Body(file=f)


async def test_a_spooled_message_is_readable_by_the_hooks_then_released(
    tmp_path: Path
) -> None:
    """Issue 12: the hand-over task owns the spool file; the `on_accepted` hooks (which
    read the Subject for the per-user counters) still see it, and it is closed after."""
    services = services_with(tmp_path, [])
    seen: list[bytes] = []

    async def hook(session: Session, tx: Transaction) -> None:
        seen.append(tx.body.header_block())

    services.on_accepted.append(("subject", hook))
    conv = conversation(services)
    await conv.mail("<a@example.org>")
    await conv.rcpt("<joe@example.com>")
    body = spooled(tmp_path, MESSAGE)
    step = await conv.data_end(Data(body, len(MESSAGE), False, 0))
    assert str(step.reply).startswith("250 ok")
    assert seen and seen[0].endswith(MESSAGE) and seen[0].startswith(b"Received: ")
    assert body._file is not None and body._file.closed


@pytest.mark.parametrize("refusal", ["too_big", "spool_failed", "hops"])
async def test_a_refused_spooled_message_is_released(tmp_path: Path, refusal: str) -> None:
    conv = conversation(services_with(tmp_path, []))
    await conv.mail("<a@example.org>")
    await conv.rcpt("<joe@example.com>")
    body = spooled(tmp_path, MESSAGE)
    data = Data(body, len(MESSAGE), refusal == "too_big", 1000 if refusal == "hops" else 0,
                spool_failed=refusal == "spool_failed")
    step = await conv.data_end(data)
    assert step.reply.code in (451, 552, 554)
    if refusal == "spool_failed":
        assert str(step.reply) == "451 qq write error or disk full (#4.3.0)"
    assert body._file is not None and body._file.closed
