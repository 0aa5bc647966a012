"""The limits alert's delivery: an alert attempt cut short (the check's timeout) must not
leave the incident claimed, or the admin would hear nothing for a whole incident; and the
alert goes to the plain delivery, never through the content scanners (a scanner outage
or a spam "delete" must not swallow it)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from mailguard.app import build_checks
from mailguard.body import Body, Message
from mailguard.checks.limits import LimitsCheck, build_limits
from mailguard.config import load
from mailguard.context import Session, Transaction
from mailguard.delivery.base import Delivered, Delivery
from mailguard.delivery.maildir import MaildirDelivery, MaildirSpool
from mailguard.metrics import Metrics
from mailguard.pipeline import Check
from mailguard.policy import CheckPolicy, Mode
from mailguard.resources import Resources
from mailguard.store.repo import Store
from mailguard.store.users import UserStore
from mailguard.verdict import Stage, Verdict
from tests.integration.test_limits_check import (  # noqa: F401 - fixtures
    LIMITS,
    Rig,
    rig,
    sqlite_url,
    stores,
)


class HangingDelivery:
    """A queue that never answers (a hung qmail-queue, say)."""

    async def deliver(self, sender: str, rcpts: Sequence[str], message: Message, *,
                      authenticated: bool = False) -> Delivered:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def _limits(r: Rig, url: str, store: Store, delivery: Delivery, *,
            scanning: bool = False) -> tuple[Check, CheckPolicy]:
    """A second limits check on the rig's store and clock, with its own delivery."""
    res = Resources(load(r.config_path, {"store": {"url": url}}), r.clock, Metrics(), store,
                    delivery)
    if scanning:  # as the daemon assembles itself, clamd included
        [(check, policy)] = [(c, p) for c, p in build_checks(res) if c.name == "limits"]
        assert "clamd" in [c.name for c, _ in build_checks(res)]
        return check, policy
    return build_limits(res, res.config.policy("limits"))


async def _mail(check: Check, r: Rig, stage: Stage = Stage.MAIL) -> Verdict:
    """One message of alice's through `check` alone: decided at MAIL, and with
    Stage.DATA counted as accepted when MAIL let it through."""
    session = Session(ipaddress.ip_address("127.0.0.1"), 4321, r.clock, relay_client=True)
    tx = Transaction("alice@example.com", rcpts=["bob@example.org"],
                     body=Body(b"Subject: s\n\nhi\n"))
    session.transaction = tx
    verdict = await check.evaluate(Stage.MAIL, session)
    if stage is Stage.DATA and not verdict.stops:
        assert isinstance(check, LimitsCheck)
        await check.record_accepted(session, tx)
    return verdict


async def test_alert_cut_short_releases_the_incident(
        tmp_path: Path, sqlite_url: str, stores: list[Store]) -> None:  # noqa: F811
    toml = LIMITS.replace("delay_min_s = 30\ndelay_max_s = 240", "delay_min_s = 0\n"
                          "delay_max_s = 0") + "[checks.limits]\ntimeout_s = 0.3\n"
    r = await rig(tmp_path, sqlite_url, toml, stores)
    for _ in range(6):
        assert (await r.send())[-1].startswith(b"250 ok ")
    # the crossing, through a queue that hangs: the runner gives up after timeout_s
    check, policy = _limits(r, sqlite_url, stores[0], HangingDelivery())
    assert policy.mode is Mode.ENFORCE and policy.timeout_s == 0.3
    try:
        async with asyncio.timeout(policy.timeout_s):
            await _mail(check, r)
    except TimeoutError:
        pass
    status = await UserStore(stores[0].db).status("alice@example.com")
    assert status.last_alert_ts is None and status.alerts == 0
    # so the next crossing (through the working delivery) alerts the admin
    assert await r.send() == [
        b"451 4.7.1 too much mail from alice@example.com in the last hour, try again later"]
    assert len(r.alerts()) == 1


async def test_alert_is_not_scanned(
        tmp_path: Path, sqlite_url: str, stores: list[Store]) -> None:  # noqa: F811
    # clamd unreachable with on_error = tempfail: mail is refused, the alert still goes out
    toml = LIMITS + '[clamd]\nenabled = true\nservers = ["unix:/nonexistent/clamd.sock"]\n'
    r = await rig(tmp_path, sqlite_url, toml, stores)
    plain = MaildirDelivery(MaildirSpool(r.spool, r.clock), r.clock)
    check, _ = _limits(r, sqlite_url, stores[0], plain, scanning=True)
    verdicts = [await _mail(check, r, Stage.DATA) for _ in range(7)]
    assert [v.stops for v in verdicts] == [False] * 6 + [True]
    [alert] = r.alerts()
    assert b"outbound mail limited: alice@example.com" in alert
    assert b"X-MailGuard-Virus-Scan" not in alert
