"""Spam scanning with spamd at the QUEUE stage: one scan per distinct recipient whose
filtering is on (`User: <rcpt>`, so SpamAssassin applies that user's preferences), and
each recipient's disposition from their settings (spam_rules).

Dispositions are written to `tx.dispositions` before anything can fail, so that with
`on_error = "open"` (`[spamd] on_error = "pass"`) the recipients spamd did answer for
keep their disposition and the others are delivered marked `unscanned`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from mailguard.checks import spam_rules as rules
from mailguard.checks.virus_scan import SCAN_SECONDS, SCANNER_UP
from mailguard.clock import Clock
from mailguard.context import Session, Transaction
from mailguard.errors import PermanentError, TemporaryError
from mailguard.metrics import Metrics
from mailguard.policy import CheckPolicy
from mailguard.resources import Resources
from mailguard.scanners.spamd import SpamdClient, SpamResult
from mailguard.settings.scan import SpamConfig, SpamdConfig
from mailguard.store.prefs_records import DomainPrefs, UserPrefs
from mailguard.verdict import Action, Outcome, Reply, Stage, Verdict, tempfail

log = logging.getLogger("mailguard.scan")

SCAN_METRIC = "mailguard_scan_total"
SPAM_ACTION_METRIC = "mailguard_spam_action_total"
TEMP_SPAMD = Reply(451, "spam scanner unavailable, try again later", "4.3.0")
TEMP_PREFS = Reply(451, "cannot read spam preferences, try again later", "4.3.0")


class PrefsSource(Protocol):
    """What the check reads preferences from (store.prefs.PrefsStore)."""

    async def lookup(
        self, addresses: Iterable[str]
    ) -> tuple[Mapping[str, UserPrefs], Mapping[str, DomainPrefs]]: ...


def declare_metrics(metrics: Metrics) -> None:
    metrics.declare(SCAN_METRIC, "counter", "content scans by scanner and result")
    metrics.declare(SPAM_ACTION_METRIC, "counter", "spam recipients by disposition")
    metrics.declare(SCAN_SECONDS, "histogram", "content scan latency by scanner (errors too)")
    # several workers: 0 when any live worker's last scan failed
    metrics.declare(SCANNER_UP, "gauge", "1 when the scanner's last scan got an answer",
                    aggregate="livemin")


class SpamdCheck:
    """Per-recipient spam decisions; never refuses the message itself."""

    name = "spamd"
    stages = frozenset({Stage.QUEUE})
    error_reply = TEMP_SPAMD

    def __init__(self, client: SpamdClient, prefs: PrefsSource, cfg: SpamdConfig,
                 spam: SpamConfig, metrics: Metrics, *, quarantine: bool = False) -> None:
        self._client = client
        self._quarantine = quarantine  # a [quarantine] directory is configured
        self._prefs = prefs
        self._cfg = cfg
        self._spam = spam
        self._metrics = metrics
        declare_metrics(metrics)

    async def evaluate(self, stage: Stage, session: Session) -> Verdict:
        tx = session.transaction
        assert tx is not None
        rcpts = list(tx.rcpts)
        try:
            users, domains = await self._prefs.lookup(rcpts)
        except TemporaryError as exc:
            log.error("event=prefs_error error=%r", str(exc))
            return tempfail(TEMP_PREFS, f"preferences: {exc}")
        eff = {r: self._effective(r, users, domains) for r in rcpts}
        wanted = list(dict.fromkeys(r.lower() for r in rcpts if eff[r].enabled))
        if not wanted:
            return Verdict(Action.CONTINUE, reason="filtering off for every recipient",
                           outcome=Outcome.SKIP)
        if tx.body.size > self._cfg.max_size_bytes:
            self._metrics.inc(SCAN_METRIC, scanner="spamd", result="too_large")
            scans: dict[str, tuple[rules.Scan, SpamResult | None]] = {
                u: (rules.Scan.TOO_LARGE, None) for u in wanted}
        else:
            # within spamd's limit, so it fits in memory whether or not it was spooled
            scans = await self._scan_users(wanted, tx.body.read_all(), session.clock)
        return self._decide(tx, eff, scans)

    def _effective(self, rcpt: str, users: Mapping[str, UserPrefs],
                   domains: Mapping[str, DomainPrefs]) -> rules.Effective:
        """rules.effective, with "quarantine" as "tag" where no quarantine exists."""
        eff = rules.effective(rcpt, users.get(rcpt.lower()), domains.get(_domain(rcpt)),
                              self._spam)
        if eff.action == "quarantine" and not self._quarantine:
            return dataclasses.replace(eff, action="tag")
        return eff

    def _decide(self, tx: Transaction, eff: Mapping[str, rules.Effective],
                scans: Mapping[str, tuple[rules.Scan, SpamResult | None]]) -> Verdict:
        spam: list[str] = []
        failed = 0
        for r in tx.rcpts:
            if not eff[r].enabled:
                continue
            scan, result = scans[r.lower()]
            tx.dispositions[r] = rules.treat(scan, result, eff[r], self._spam)
            if scan is rules.Scan.ERROR:
                failed += 1
            if scan is rules.Scan.SPAM and result is not None:
                self._metrics.inc(SPAM_ACTION_METRIC, action=eff[r].action)
                spam.append(f"{r} {result.score:.1f}/{result.threshold:.1f} {eff[r].action}"
                            f" (spamd {result.server})")
                if tx.dispositions[r].drop:
                    log.info("event=spam_deleted rcpt=%s score=%.1f", r, result.score)
        if failed:
            raise TemporaryError(f"spamd failed for {failed} recipient(s)")
        if any(s is rules.Scan.TOO_LARGE for s, _ in scans.values()):
            return Verdict(Action.CONTINUE, reason="too large for spamd", outcome=Outcome.SKIP)
        if spam:
            return Verdict(Action.CONTINUE, reason="spam: " + ", ".join(spam),
                           outcome=Outcome.FAIL)
        scores = ", ".join(f"{r.score:.1f}" for _, r in scans.values() if r is not None)
        return Verdict(Action.CONTINUE, reason=f"ham {scores}")

    async def _scan_users(
        self, users: list[str], message: bytes, clock: Clock
    ) -> dict[str, tuple[rules.Scan, SpamResult | None]]:
        limit = asyncio.Semaphore(self._cfg.max_parallel)
        report = self._spam.report_header

        async def one(user: str) -> SpamResult:
            async with limit:
                started = clock.monotonic()
                try:
                    return await self._client.check(message, user, report=report)
                finally:  # one spamd run per recipient; failures are timed too
                    self._metrics.observe(SCAN_SECONDS, clock.monotonic() - started,
                                          scanner="spamd")

        results = await asyncio.gather(*(one(u) for u in users), return_exceptions=True)
        out: dict[str, tuple[rules.Scan, SpamResult | None]] = {}
        for user, res in zip(users, results, strict=True):
            if isinstance(res, SpamResult):
                self._metrics.set(SCANNER_UP, 1.0, scanner="spamd")
                self._metrics.inc(SCAN_METRIC, scanner="spamd",
                                  result="spam" if res.spam else "ham")
                out[user] = (rules.Scan.SPAM if res.spam else rules.Scan.HAM, res)
                continue
            if not isinstance(res, TemporaryError | PermanentError):
                raise res  # a bug, or cancellation: not a scanner failure
            self._metrics.inc(SCAN_METRIC, scanner="spamd", result="error")
            self._metrics.set(SCANNER_UP, 0.0, scanner="spamd")
            log.warning("event=scan_error scanner=spamd user=%s error=%r", user, str(res))
            out[user] = (rules.Scan.ERROR, None)
        return out


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def build_spamd(res: Resources, policy: CheckPolicy) -> tuple[SpamdCheck, CheckPolicy]:
    from mailguard.store.prefs import PrefsStore  # noqa: PLC0415 - SQLAlchemy only here

    cfg = res.config
    client = SpamdClient(cfg.spamd.servers, timeout_s=cfg.spamd.timeout_s)
    check = SpamdCheck(client, PrefsStore(res.store.db), cfg.spamd, cfg.spam, res.metrics,
                       quarantine=cfg.quarantine.enabled)
    return check, policy
