"""The QUEUE stage: the pipeline's QUEUE checks, then the hand-over per disposition.

Both ways in — a message the daemon accepted over SMTP and a message from the
`QMAILQUEUE` wrapper — end here, so both run the same checks and leave the same
results on the transaction (the summary line shows them). Order of work:

1. the QUEUE-stage checks (clamd, spamd, …) under one deadline (`[scan] deadline_s`);
   each records a CheckResult, spamd writes each recipient's disposition;
2. refused (a virus: 554 for everybody, and the warnings go out; a scanner down: 451)
   → nothing is queued;
3. otherwise recipients with equal dispositions form a group and each group's copy is
   queued through the plain delivery. A group failing after an earlier one was queued →
   451 (the client retries: a duplicate for the earlier groups is possible, a loss is not).

Queueing is never cut short by the deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from typing import TYPE_CHECKING

from mailguard.body import Body, Message, as_body
from mailguard.checks.virus_scan import VIRUS_FACT
from mailguard.clock import Clock
from mailguard.context import Session, Transaction
from mailguard.delivery.base import Delivered, Delivery, RefusesRecipients
from mailguard.errors import TemporaryError
from mailguard.headers import edit_body
from mailguard.metrics import Metrics
from mailguard.pipeline import Pipeline
from mailguard.qmail.exitcodes import EX_OK
from mailguard.qmail.replies import accepted_reply
from mailguard.scanning import grouping
from mailguard.scanning.notify_api import VirusNotifier
from mailguard.verdict import Action, CheckResult, Outcome, Reply, Stage

if TYPE_CHECKING:
    from mailguard.quarantine import QuarantineService

log = logging.getLogger("mailguard.scan")

TEMP_DEADLINE = Reply(451, "message scanning took too long, try again later", "4.3.0")
TEMP_PARTIAL = Reply(451, "message queued for some recipients only, try again later", "4.3.0")
DEADLINE_METRIC = "mailguard_scan_deadline_total"
QUARANTINE_METRIC = "mailguard_quarantined_total"
QUARANTINE_ERRORS_METRIC = "mailguard_quarantine_errors_total"
TEMP_QUARANTINE = Reply(451, "cannot keep the message in quarantine, try again later",
                        "4.3.0")


class QueueStage:
    """Runs the QUEUE stage for one accepted message and hands it over."""

    def __init__(self, pipeline: Pipeline, delivery: Delivery, *, clock: Clock,
                 metrics: Metrics, deadline_s: float,
                 notifier: VirusNotifier | None = None,
                 quarantine: QuarantineService | None = None) -> None:
        self.pipeline = pipeline
        self.quarantine = quarantine
        self.delivery = delivery
        self._clock = clock
        self._metrics = metrics
        self._deadline_s = deadline_s
        self._notifier = notifier
        metrics.declare(DEADLINE_METRIC, "counter", "messages whose scans hit [scan] deadline_s")
        metrics.declare(QUARANTINE_METRIC, "counter", "copies kept in quarantine, by kind")
        metrics.declare(QUARANTINE_ERRORS_METRIC, "counter",
                        "copies the quarantine could not keep")

    def refuses(self, rcpt: str) -> Reply | None:
        """The delivery's permanent reply for a recipient it can never store, or None."""
        if isinstance(self.delivery, RefusesRecipients):
            return self.delivery.refuses(rcpt)
        return None

    def with_delivery(self, delivery: Delivery) -> QueueStage:
        """The same checks in front of another hand-over (the QMAILQUEUE wrapper's)."""
        return QueueStage(self.pipeline, delivery, clock=self._clock, metrics=self._metrics,
                          deadline_s=self._deadline_s, notifier=self._notifier,
                          quarantine=self.quarantine)

    async def process(self, session: Session, tx: Transaction, message: Message, *,
                      scan: bool = True) -> Delivered:
        """Check (unless `scan` is False) and queue `message` (LF line ends, our
        Received line on top) for `tx`'s sender and recipients. A spooled Body stays
        the caller's to close: every copy made here is a view of it."""
        message = as_body(message)
        tx.body = message
        scan = scan and self.pipeline.runs(Stage.QUEUE)
        if scan:
            # the session's own transaction may be detached meanwhile (client gone): the
            # checks see this one whatever happens to the session
            view = dataclasses.replace(session, transaction=tx)
            started = self._clock.monotonic()
            try:
                async with asyncio.timeout(self._deadline_s):
                    verdict = await self.pipeline.run(Stage.QUEUE, view)
            except TimeoutError:
                self._metrics.inc(DEADLINE_METRIC)
                log.warning("event=scan_deadline deadline_s=%g", self._deadline_s)
                tx.results.append(CheckResult(
                    "queue", Stage.QUEUE, Outcome.ERROR, Action.TEMPFAIL, True,
                    f"scans took longer than {self._deadline_s:g}s",
                    self._clock.monotonic() - started))
                return Delivered(False, TEMP_DEADLINE)
            if verdict.action in (Action.REJECT, Action.TEMPFAIL):
                virus = tx.facts.get(VIRUS_FACT, "")
                if virus and verdict.action is Action.REJECT:
                    await self._keep_virus(message, tx, virus)
                    await self._notify(message, tx, virus, bool(session.auth_user))
                reply = verdict.reply or Reply(451, "temporarily refused", "4.3.0")
                return Delivered(False, reply)
        return await self._queue(tx, message, edited=scan)

    async def _notify(self, message: Body, tx: Transaction, virus: str,
                      authenticated: bool) -> None:
        if self._notifier is None:
            return
        try:
            # the warnings quote the original's headers, never its body
            await self._notifier.notify(message.header_block(), tx.mail_from, list(tx.rcpts), virus,
                                        authenticated=authenticated)
        except Exception as exc:  # a failed warning must not turn the refusal into a 451
            self._metrics.inc("mailguard_notify_errors_total", kind="virus")
            log.error("event=virus_notify_failed error=%r", str(exc))

    async def _keep_virus(self, message: Body, tx: Transaction, virus: str) -> None:
        """With `[quarantine] viruses`, a copy per recipient for the admins; the message
        is refused whatever happens here, so a failure is logged, not answered."""
        q = self.quarantine
        if q is None or not q.cfg.viruses:
            return
        try:
            ids = await q.keep(tx.rcpts, tx.mail_from, message, kind="virus",
                               reasons=[virus] * len(tx.rcpts))
        except TemporaryError as exc:
            self._metrics.inc(QUARANTINE_ERRORS_METRIC)
            log.error("event=quarantine_failed kind=virus error=%r", str(exc))
            return
        self._metrics.inc(QUARANTINE_METRIC, kind="virus", amount=len(ids))
        log.info("event=quarantined kind=virus ids=%s", ",".join(map(str, ids)))

    async def _hand_over(self, tx: Transaction, g: grouping.Group,
                         copy: Body) -> Delivered:
        """A group's copy to the delivery, or to the quarantine (one entry per
        recipient; the queue id lists them as q<id>)."""
        if not g.disposition.quarantine:
            return await self.delivery.deliver(tx.mail_from, g.envelope, copy)
        if self.quarantine is None:  # the spam check falls back to "tag" before this
            return Delivered(False, TEMP_QUARANTINE)
        ds = [tx.dispositions.get(r) for r in g.originals]
        try:
            ids = await self.quarantine.keep(
                g.originals, tx.mail_from, copy, kind="spam",
                scores=[d.score if d else None for d in ds],
                reasons=[d.detail if d else "" for d in ds])
        except TemporaryError as exc:
            self._metrics.inc(QUARANTINE_ERRORS_METRIC)
            log.error("event=quarantine_failed kind=spam error=%r", str(exc))
            return Delivered(False, TEMP_QUARANTINE)
        self._metrics.inc(QUARANTINE_METRIC, kind="spam", amount=len(ids))
        return Delivered(True, accepted_reply(self._clock.now(), 0),
                         ",".join(f"q{i}" for i in ids), exit_code=EX_OK)

    async def _queue(self, tx: Transaction, message: Body, *, edited: bool) -> Delivered:
        """`edited`: the QUEUE checks ran, so every copy loses incoming headers that
        would pass for ours and gets our status lines; otherwise it goes as it is."""
        groups = grouping.group(tx.rcpts, tx.dispositions)
        if not groups:  # every recipient's spam was deleted: accepted, nothing to queue
            return Delivered(True, accepted_reply(self._clock.now(), 0), "deleted",
                             exit_code=EX_OK)
        done: list[Delivered] = []
        for i, g in enumerate(groups):
            prepend = [*tx.queue_headers, *grouping.group_headers(g)]
            copy = message
            if edited:
                copy = edit_body(message, drop=functools.partial(_drops, g), prepend=prepend,
                                 subject_prefix=g.disposition.subject_prefix)
            delivered = await self._hand_over(tx, g, copy)
            if not delivered.accepted:
                if i == 0:
                    return delivered
                log.error("event=partial_delivery queued_groups=%d failed_rcpts=%s reply=%r",
                          i, ",".join(g.envelope), str(delivered.reply))
                return Delivered(False, TEMP_PARTIAL)
            done.append(delivered)
        last = done[-1]
        return Delivered(True, last.reply, ",".join(d.queue_id for d in done), last.exit_code)


def _drops(g: grouping.Group, name: str) -> bool:
    return grouping.drops(name, g)
