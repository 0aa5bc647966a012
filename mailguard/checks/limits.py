"""Per-user outbound limits across connections and MX hosts (counters in the store).

Stages: MAIL (suspension; message limits: delay past soft, 451 past hard), RCPT (the
panic switch for relayed recipients; recipient limits). A message is counted only once
the hand-over accepted it (`record_accepted`, a Resources.on_accepted hook): one event
with its recipients, their domains and its Subject. Mail tempfailed or refused at the
QUEUE stage (scanner down, virus, qmail-queue failure) and its retries are not counted.
The decisions are in `limits_decide`; this class does the store I/O, the sleeping and
the admin alert.

Failure policy: a store error raises TemporaryError and the runner applies
[checks.limits] on_error, `tempfail` by default: while the database is down the users
it covers (relay clients and AUTH users by default) get 451 and retry, rather than
sending unchecked — outbound abuse during an outage is what hurts the server's
reputation. Sites that prefer availability set on_error = "open" (logged, counted).

Log mode: decides, counts and alerts, but neither sleeps, refuses nor suspends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from email.utils import make_msgid
from typing import TYPE_CHECKING

from mailguard.checks.limits_decide import (
    PANIC_REPLY,
    Assessment,
    Level,
    assess,
    hard_reply,
    identity,
    rcpt_domains,
    subject_of,
    suspended_reply,
)
from mailguard.context import Session, Transaction
from mailguard.delivery.base import Delivery
from mailguard.errors import TemporaryError
from mailguard.metrics import Metrics
from mailguard.notify.alert import AlertFacts, build_alert
from mailguard.policy import CheckPolicy, Mode
from mailguard.settings.limits import LimitsConfig
from mailguard.store.alerts import AlertStore
from mailguard.store.users import UserStore
from mailguard.verdict import CONTINUE, Action, Reply, Stage, Verdict, tempfail

if TYPE_CHECKING:
    from mailguard.pipeline import Check
    from mailguard.resources import Resources

log = logging.getLogger("mailguard.limits")


class LimitsCheck:
    name = "limits"
    stages = frozenset({Stage.MAIL, Stage.RCPT})

    def __init__(self, cfg: LimitsConfig, users: UserStore, delivery: Delivery, *,
                 hostname: str, metrics: Metrics, is_local_domain: Callable[[str], bool],
                 enforce: bool, record_timeout_s: float = 30.0,
                 alerts: AlertStore | None = None) -> None:
        self._cfg = cfg
        self._alerts = alerts
        self._users = users
        self._delivery = delivery
        self._hostname = hostname
        self._metrics = metrics
        self._is_local = is_local_domain
        self._enforce = enforce
        self._record_timeout_s = record_timeout_s
        self._periods = [w.period_s for w in cfg.windows]
        self._threshold = Level.SOFT if cfg.alert_threshold == "soft" else Level.HARD
        metrics.declare("mailguard_limits_total", "counter",
                        "Per-user limit decisions by result (delayed, refused, suspended, panic)")
        metrics.declare("mailguard_limits_alerts_total", "counter",
                        "Outbound abuse alerts by result (sent, failed)")

    async def evaluate(self, stage: Stage, session: Session) -> Verdict:
        tx = session.transaction
        assert tx is not None
        relaying = session.relay_client or bool(session.auth_user)
        panic_applies = stage is Stage.RCPT and relaying and not self._local(tx.rcpt)
        if panic_applies and await self._users.panic():
            self._metrics.inc("mailguard_limits_total", result="panic")
            return tempfail(PANIC_REPLY, "panic switch is on")
        user = identity(session, tx.mail_from, self._cfg.apply_to)
        if user is None:
            return CONTINUE
        now = session.clock.now()
        if stage is Stage.MAIL and (await self._users.status(user)).suspended:
            self._metrics.inc("mailguard_limits_total", result="suspended")
            return tempfail(self._suspended(user), f"user {user} is suspended")
        counts = await self._users.usage(user, now, self._periods)
        pending_rcpts = len(tx.rcpts) + 1 if stage is Stage.RCPT else 1
        verdict = assess(
            counts, self._cfg.windows, messages=1, rcpts=pending_rcpts,
            delay_kind="rcpts" if stage is Stage.RCPT else "messages",
            delay_min_s=self._cfg.delay_min_s, delay_max_s=self._cfg.delay_max_s,
        )
        if verdict.level >= self._threshold and await self._incident(user, verdict, now):
            return tempfail(self._suspended(user), f"user {user} suspended: {verdict.describe()}")
        if verdict.level is Level.HARD:
            self._metrics.inc("mailguard_limits_total", result="refused")
            return tempfail(hard_reply(user, verdict.period_s), verdict.describe())
        if verdict.level is Level.SOFT:
            self._metrics.inc("mailguard_limits_total", result="delayed")
            if self._enforce:
                await session.clock.sleep(verdict.delay_s)
            shadow = "" if self._enforce else " (log mode: not slept)"
            return Verdict(Action.CONTINUE, reason=f"user {user}: {verdict.describe()}{shadow}")
        return CONTINUE

    async def record_accepted(self, session: Session, tx: Transaction) -> None:
        """Count a message the hand-over accepted (in log mode too). Runs before the
        client's 250, bounded by [checks.limits] timeout_s; a failure is logged by the
        caller and the message goes uncounted (it is queued: the reply stands)."""
        user = identity(session, tx.mail_from, self._cfg.apply_to)
        if user is None:
            return
        async with asyncio.timeout(self._record_timeout_s):
            await self._users.record_event(
                user, session.clock.now(), len(tx.rcpts), domains=rcpt_domains(tx.rcpts),
                subject=subject_of(tx.body.header_block()), keep_s=self._cfg.longest_s,
            )

    def _local(self, rcpt: str) -> bool:
        _, at, domain = rcpt.rpartition("@")
        return not at or self._is_local(domain)  # <postmaster>: qualified with our name

    def _suspended(self, user: str) -> Reply:
        return suspended_reply(user, self._cfg.alert_to or f"postmaster@{self._hostname}")

    async def _incident(self, user: str, verdict: Assessment, now: float) -> bool:
        """Alert the admin once per incident, then suspend when configured (enforce mode
        only). Returns True when the user has just been suspended."""
        cfg = self._cfg
        if not cfg.alert_to:
            return False
        not_after = now - cfg.incident_s
        last = (await self._users.status(user)).last_alert_ts
        if last is not None and last > not_after:
            return False  # the incident is already known
        if not await self._users.claim_alert(user, now, not_after):
            return False  # another session or MX host got there first
        suspend = cfg.suspend_on_alert and self._enforce
        sent = False
        try:
            sent = await self._send_alert(user, verdict, now, suspend)
        finally:
            # also when cut short (the check's timeout, a store error reading the
            # details): a claim left behind would silence the whole incident
            if not sent:
                await self._release(user)  # the next crossing tries again
        if suspend:  # only now: the admin is told (or the attempt logged) first
            await self._users.suspend(user, f"automatic: {verdict.describe()}", now)
            log.warning("event=user_suspended user=%r reason=%r", user, verdict.describe())
        return suspend

    async def _release(self, user: str) -> None:
        try:
            await self._users.release_alert(user)
        except TemporaryError as exc:  # the store is down: the claim expires by itself
            log.error("event=limits_alert_release_failed user=%r error=%r", user, str(exc))

    async def _record_incident(self, user: str, reason: str, now: float) -> None:
        """The alert joins the others in the store's `alert` table (the admin page lists
        it): an incident of its own, closed at once — this check's claim already makes
        it one mail per `incident_s`."""
        if self._alerts is None:
            return
        key = f"outbound:{user}"
        try:
            await self._alerts.touch(key, "outbound", f"{user}: {reason}",
                                     host=self._hostname, now=now, remind_s=0)
            await self._alerts.resolve(key, now=now)
        except TemporaryError as exc:  # the mail went out; the record is a nicety
            log.error("event=limits_alert_record_failed user=%r error=%r", user, str(exc))

    async def _send_alert(self, user: str, verdict: Assessment, now: float,
                          suspend: bool) -> bool:
        cfg = self._cfg
        detail = await self._users.detail(user, now, self._periods)
        assert detail is not None  # claim_alert created the state row
        facts = AlertFacts(user, verdict.describe(), suspend, detail, cfg.windows, now,
                           self._hostname, cfg.incident_s)
        message = build_alert(facts, alert_from=cfg.alert_from, alert_to=cfg.alert_to,
                              message_id=make_msgid("mailguard-alert", self._hostname))
        try:
            delivered = await self._delivery.deliver(cfg.alert_from, [cfg.alert_to], message)
            ok, reply = delivered.accepted, str(delivered.reply)
        except Exception as exc:  # the alert must never cost the decision; logged below
            ok, reply = False, repr(exc)
        result = "sent" if ok else "failed"
        self._metrics.inc("mailguard_limits_alerts_total", result=result)
        if ok:
            await self._record_incident(user, verdict.describe(), now)
        level = logging.WARNING if ok else logging.ERROR
        log.log(level, "event=limits_alert result=%s user=%r to=%s reason=%r reply=%r",
                result, user, cfg.alert_to, verdict.describe(), reply)
        return ok


def build_limits(res: Resources, policy: CheckPolicy) -> tuple[Check, CheckPolicy]:
    """The check and its policy; registers its counting of accepted mail in
    `res.on_accepted`. `timeout_s` of [checks.limits] bounds the check's own work
    (store, alert; also the counting); the deliberate delay (at most delay_max_s) is
    added to it for the MAIL/RCPT decisions."""
    config = res.config
    check = LimitsCheck(  # res.delivery: our own alert never goes through the scanners
        config.limits, UserStore(res.store.db), res.delivery,
        hostname=config.server.hostname, metrics=res.metrics,
        is_local_domain=res.is_local_domain, enforce=policy.mode is Mode.ENFORCE,
        record_timeout_s=policy.timeout_s, alerts=AlertStore(res.store.db),
    )
    if policy.mode is not Mode.OFF:  # off: the pipeline drops the check; no counting either
        res.on_accepted.append((check.name, check.record_accepted))
    return check, replace(policy, timeout_s=policy.timeout_s + config.limits.delay_max_s)
