"""The QUEUE stage as a Delivery wrapper: scan, decide per recipient, queue per group.

`ScanningDelivery(inner)` is what the daemon (and the QMAILQUEUE wrapper, through the
daemon) hands accepted mail to. Order of work:

1. one clamd scan of the whole message: infected → refused for everyone (554, exit 31)
   and the warnings go out; errors / too large → the configured action;
2. one spamd scan per distinct recipient whose filtering is on (`User: <rcpt>`);
3. only when every scan is done: recipients grouped by treatment, each group queued
   through `inner`. A group failing after an earlier one was queued → 451 (the client
   retries: a duplicate for the earlier groups is possible, a loss is not).

The scans share one deadline (`[scan] deadline_s`); queueing is never cut short.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailguard.clock import Clock
from mailguard.delivery.base import Delivered, Delivery
from mailguard.errors import PermanentError, TemporaryError
from mailguard.metrics import Metrics
from mailguard.qmail.exitcodes import EX_OK
from mailguard.scanners.clamd import ClamdClient, Infected, TooLarge
from mailguard.scanners.spamd import SpamdClient, SpamResult
from mailguard.scanning import dispositions as disp
from mailguard.scanning.headers import edit, header_line, sanitise
from mailguard.scanning.notify_api import VirusNotifier
from mailguard.settings.scan import ClamdConfig, SpamConfig, SpamdConfig
from mailguard.store.prefs_records import DomainPrefs, UserPrefs
from mailguard.verdict import Reply

log = logging.getLogger("mailguard.scan")

SCAN_METRIC = "mailguard_scan_total"
SPAM_ACTION_METRIC = "mailguard_spam_action_total"
TEMP_CLAMD = Reply(451, "virus scanner unavailable, try again later", "4.3.0")
TEMP_TOO_LARGE = Reply(451, "message too large for the virus scanner, try again later", "4.3.0")
PERM_TOO_LARGE = Reply(554, "message too large for the virus scanner", "5.3.4")
TEMP_SPAMD = Reply(451, "spam scanner unavailable, try again later", "4.3.0")
TEMP_PREFS = Reply(451, "cannot read spam preferences, try again later", "4.3.0")
TEMP_DEADLINE = Reply(451, "message scanning took too long, try again later", "4.3.0")
TEMP_PARTIAL = Reply(451, "message queued for some recipients only, try again later", "4.3.0")


def declare_metrics(metrics: Metrics) -> None:
    metrics.declare(SCAN_METRIC, "counter", "content scans by scanner and result")
    metrics.declare(SPAM_ACTION_METRIC, "counter", "spam recipients by disposition")


class PrefsSource(Protocol):
    async def lookup(
        self, addresses: Iterable[str]
    ) -> tuple[Mapping[str, UserPrefs], Mapping[str, DomainPrefs]]: ...


@dataclass(frozen=True)
class ScanSetup:
    """The scanning settings and clients; a scanner left None is not used."""

    clamd: ClamdClient | None = None
    spamd: SpamdClient | None = None
    prefs: PrefsSource | None = None  # needed with spamd
    clamd_cfg: ClamdConfig = field(default_factory=ClamdConfig)
    spamd_cfg: SpamdConfig = field(default_factory=SpamdConfig)
    spam_cfg: SpamConfig = field(default_factory=SpamConfig)
    deadline_s: float = 120.0


class _Refused(Exception):
    """Ends the scanning with a final answer (refusal or temporary failure)."""

    def __init__(self, delivered: Delivered, virus: str = "") -> None:
        super().__init__(str(delivered.reply))
        self.delivered = delivered
        self.virus = virus  # set when warnings are due (sent outside the deadline)


def _fail(reply: Reply) -> _Refused:
    # exit_code None: mailguard's own decision, not a queue program's answer; the
    # QMAILQUEUE wrapper turns it into 31/71 or 82 with this reply's text on fd 6.
    return _Refused(Delivered(False, reply))


class ScanningDelivery:
    """A Delivery that scans first and queues per recipient group through `inner`."""

    def __init__(self, inner: Delivery, setup: ScanSetup, *, clock: Clock, metrics: Metrics,
                 notifier: VirusNotifier | None = None) -> None:
        if setup.spamd is not None and setup.prefs is None:
            raise ValueError("spam scanning needs a preferences source")
        self.inner = inner
        self.setup = setup
        self.notifier = notifier
        self._clock = clock
        self._metrics = metrics

    async def deliver(self, sender: str, rcpts: Sequence[str], message: bytes, *,
                      authenticated: bool = False) -> Delivered:
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(self.setup.deadline_s):
                virus_header = await self._virus(sender, rcpts, message)
                treatments = await self._spam(rcpts, message)
        except _Refused as refused:
            if refused.virus:
                await self._notify(message, sender, rcpts, refused.virus, authenticated)
            self._log(sender, rcpts, started, refused.delivered.reply, groups=0)
            return refused.delivered
        except TimeoutError:
            log.warning("event=scan_deadline deadline_s=%g", self.setup.deadline_s)
            self._metrics.inc(SCAN_METRIC, scanner="all", result="deadline")
            self._log(sender, rcpts, started, TEMP_DEADLINE, groups=0)
            return Delivered(False, TEMP_DEADLINE)
        groups = disp.group(rcpts, treatments)
        delivered = await self._queue(sender, groups, message, virus_header)
        self._log(sender, rcpts, started, delivered.reply, groups=len(groups))
        return delivered

    # --- virus -------------------------------------------------------------------------

    async def _virus(self, sender: str, rcpts: Sequence[str], message: bytes) -> str:
        """The X-MailGuard-Virus-Scan line to add ("" without clamd), or _Refused."""
        clamd, cfg = self.setup.clamd, self.setup.clamd_cfg
        if clamd is None:
            return ""
        try:
            result = await clamd.scan(message)
        except (TemporaryError, PermanentError) as exc:
            self._metrics.inc(SCAN_METRIC, scanner="clamd", result="error")
            log.warning("event=scan_error scanner=clamd on_error=%s error=%r",
                        cfg.on_error, str(exc))
            if cfg.on_error == "tempfail":
                raise _fail(TEMP_CLAMD) from None
            return header_line(disp.VIRUS_HEADER, "unscanned (error)")
        if isinstance(result, TooLarge):
            self._metrics.inc(SCAN_METRIC, scanner="clamd", result="too_large")
            log.warning("event=scan_too_large scanner=clamd size=%d limit=%d action=%s",
                        result.size, result.limit, cfg.on_too_large)
            if cfg.on_too_large == "tempfail":
                raise _fail(TEMP_TOO_LARGE)
            if cfg.on_too_large == "reject":
                raise _fail(PERM_TOO_LARGE)
            return header_line(disp.VIRUS_HEADER, "skipped (size)")
        if isinstance(result, Infected):
            self._metrics.inc(SCAN_METRIC, scanner="clamd", result="infected")
            name = sanitise(result.name)[:100]
            log.warning("event=virus_found virus=%r from=<%s> rcpts=%s", name, sender,
                        ",".join(rcpts))
            reply = Reply(554, f"message refused: virus {name} found", "5.7.1")
            raise _Refused(Delivered(False, reply), virus=name)
        self._metrics.inc(SCAN_METRIC, scanner="clamd", result="clean")
        return header_line(disp.VIRUS_HEADER, "clean")

    async def _notify(self, message: bytes, sender: str, rcpts: Sequence[str], virus: str,
                      authenticated: bool) -> None:
        if self.notifier is None:
            return
        try:
            await self.notifier.notify(message, sender, rcpts, virus,
                                       authenticated=authenticated)
        except Exception as exc:  # a failed warning must not turn the refusal into a 451
            self._metrics.inc("mailguard_notify_errors_total", kind="virus")
            log.error("event=virus_notify_failed error=%r", str(exc))

    # --- spam --------------------------------------------------------------------------

    async def _spam(self, rcpts: Sequence[str], message: bytes) -> dict[str, disp.Treatment]:
        """Every recipient's treatment; all scans finish before anything is queued."""
        spamd, prefs = self.setup.spamd, self.setup.prefs
        off = {r: disp.Treatment() for r in rcpts}
        if spamd is None or prefs is None:
            return off
        try:
            users, domains = await prefs.lookup(rcpts)
        except TemporaryError as exc:
            log.error("event=prefs_error error=%r", str(exc))
            raise _fail(TEMP_PREFS) from None
        cfg = self.setup.spam_cfg
        eff = {r: disp.effective(r, users.get(r.lower()), domains.get(disp_domain(r)), cfg)
               for r in rcpts}
        wanted = list(dict.fromkeys(r.lower() for r in rcpts if eff[r].enabled))
        if not wanted:
            return off
        if len(message) > self.setup.spamd_cfg.max_size_bytes:
            self._metrics.inc(SCAN_METRIC, scanner="spamd", result="too_large")
            scans: dict[str, tuple[disp.Scan, SpamResult | None]] = {
                u: (disp.Scan.TOO_LARGE, None) for u in wanted}
        else:
            scans = await self._scan_users(spamd, wanted, message)
        out: dict[str, disp.Treatment] = {}
        for r in rcpts:
            if not eff[r].enabled:
                out[r] = disp.Treatment()
                continue
            scan, result = scans[r.lower()]
            out[r] = disp.treat(scan, result, eff[r], cfg)
            if scan is disp.Scan.SPAM:
                self._metrics.inc(SPAM_ACTION_METRIC, action=eff[r].action)
                if out[r].drop:
                    log.info("event=spam_deleted rcpt=%s score=%s", r,
                             f"{result.score:.1f}" if result else "-")
        return out

    async def _scan_users(
        self, spamd: SpamdClient, users: list[str], message: bytes
    ) -> dict[str, tuple[disp.Scan, SpamResult | None]]:
        cfg = self.setup.spamd_cfg
        limit = asyncio.Semaphore(cfg.max_parallel)
        report = self.setup.spam_cfg.report_header

        async def one(user: str) -> SpamResult:
            async with limit:
                return await spamd.check(message, user, report=report)

        results = await asyncio.gather(*(one(u) for u in users), return_exceptions=True)
        out: dict[str, tuple[disp.Scan, SpamResult | None]] = {}
        for user, res in zip(users, results, strict=True):
            if isinstance(res, SpamResult):
                verdict = "spam" if res.spam else "ham"
                self._metrics.inc(SCAN_METRIC, scanner="spamd", result=verdict)
                out[user] = (disp.Scan.SPAM if res.spam else disp.Scan.HAM, res)
                continue
            if not isinstance(res, TemporaryError | PermanentError):
                raise res  # a bug, or cancellation: not a scanner failure
            self._metrics.inc(SCAN_METRIC, scanner="spamd", result="error")
            log.warning("event=scan_error scanner=spamd user=%s on_error=%s error=%r",
                        user, cfg.on_error, str(res))
            if cfg.on_error == "tempfail":
                raise _fail(TEMP_SPAMD)
            out[user] = (disp.Scan.ERROR, None)
        return out

    # --- queueing ----------------------------------------------------------------------

    async def _queue(self, sender: str, groups: list[disp.Group], message: bytes,
                     virus_header: str) -> Delivered:
        if not groups:  # every recipient's spam was deleted: accepted, nothing to queue
            reply = Reply(250, f"ok {int(self._clock.now())} qp 0")
            return Delivered(True, reply, "deleted", exit_code=EX_OK)
        done: list[Delivered] = []
        for i, g in enumerate(groups):
            top = [virus_header] if virus_header else []
            copy = edit(message, drop=functools.partial(_drops, g),
                        prepend=[*top, *disp.group_headers(g)],
                        subject_prefix=g.treatment.subject_prefix)
            delivered = await self.inner.deliver(sender, g.envelope, copy)
            if not delivered.accepted:
                if i == 0:
                    return delivered
                log.error("event=partial_delivery queued_groups=%d failed_rcpts=%s reply=%r",
                          i, ",".join(g.envelope), str(delivered.reply))
                return Delivered(False, TEMP_PARTIAL)
            done.append(delivered)
        last = done[-1]
        return Delivered(True, last.reply, ",".join(d.queue_id for d in done), last.exit_code)

    def _log(self, sender: str, rcpts: Sequence[str], started: float, reply: Reply, *,
             groups: int) -> None:
        ms = int((self._clock.monotonic() - started) * 1000)
        log.info("event=queue_stage from=<%s> rcpts=%s groups=%d reply=%d duration_ms=%d",
                 sender, ",".join(rcpts), groups, reply.code, ms)


def _drops(g: disp.Group, name: str) -> bool:
    return disp.drops(name, g)


def disp_domain(address: str) -> str:
    return address.rpartition("@")[2].lower()
