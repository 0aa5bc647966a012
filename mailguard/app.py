"""Assembles the daemon from its configuration and runs it until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from mailguard import registry
from mailguard.clock import Clock, SystemClock
from mailguard.config import Config
from mailguard.control.daemon import start_control
from mailguard.delivery.methods import build_delivery
from mailguard.frontend.metrics_http import MetricsServer
from mailguard.frontend.server import SmtpServer
from mailguard.frontend.services import Services
from mailguard.frontend.smtpauth import build_smtp_auth
from mailguard.frontend.tls import build_tls_context
from mailguard.metrics import Metrics
from mailguard.notify.virus import MailNotifier
from mailguard.pipeline import Check, Pipeline
from mailguard.policy import CheckPolicy, Mode
from mailguard.quarantine import QuarantineService
from mailguard.resources import Resources
from mailguard.scanning.stage import QueueStage
from mailguard.store.message_log import MessageLogStore
from mailguard.store.records import MessageRecord
from mailguard.store.repo import Store
from mailguard.verdict import Stage

log = logging.getLogger("mailguard.daemon")


class RecordWriter:
    """Writes message records to the store off the SMTP path: a slow or broken database
    costs statistics (logged and counted), never a reply."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._log = MessageLogStore(store.db)
        self._metrics = metrics
        self._queue: asyncio.Queue[MessageRecord | None] = asyncio.Queue(maxsize=10_000)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def put(self, rec: MessageRecord) -> None:
        try:
            self._queue.put_nowait(rec)
        except asyncio.QueueFull:
            self._metrics.inc("mailguard_store_errors_total", kind="queue_full")

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            # what queued up while the last write ran goes in one database transaction
            while len(batch) < 500 and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            try:
                await self._log.record(batch)
            except Exception as exc:  # statistics must never stop the daemon
                self._metrics.inc("mailguard_store_errors_total", kind="write")
                log.warning("event=store_error records=%d error=%r", len(batch), str(exc))

    async def stop(self) -> None:
        await self._queue.put(None)
        if self._task is not None:
            await self._task


def build_checks(res: Resources) -> list[tuple[Check, CheckPolicy]]:
    """Every registered check that is not off, in the registry's (run) order."""
    checks: list[tuple[Check, CheckPolicy]] = []
    for spec in registry.CHECKS:
        policy = res.config.policy(spec.name)
        if policy.mode is Mode.OFF:
            continue
        check, effective = spec.load_builder()(res, policy)
        checks.append((check, effective))
    return checks


def build_virus_notifier(res: Resources) -> MailNotifier:
    """Virus warnings go through the plain delivery (never through the scanner again)."""
    from mailguard.notify.languages import prefs_languages  # noqa: PLC0415
    from mailguard.notify.templates import TemplateSet  # noqa: PLC0415
    from mailguard.store.prefs import PrefsStore  # noqa: PLC0415

    c = res.config
    return MailNotifier(
        res.delivery,
        cfg=c.virus,
        hostname=c.server.hostname,
        is_local=res.is_local_domain,
        clock=res.clock,
        templates=TemplateSet.load(c.virus.templates_dir or None),
        languages=prefs_languages(PrefsStore(res.store.db)),
        metrics=res.metrics,
    )


def build_quarantine(res: Resources) -> QuarantineService | None:
    """The quarantine of `[quarantine]`, or None when no directory is configured."""
    if not res.config.quarantine.enabled:
        return None
    return QuarantineService(res.config.quarantine, res.store.db, res.clock)


async def run_daemon(config: Config, *, clock: Clock | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit status."""
    clock = clock or SystemClock()
    metrics = Metrics()
    metrics.declare("mailguard_transactions_total", "counter", "SMTP transactions by outcome")
    metrics.declare("mailguard_connections_total", "counter", "SMTP connections accepted")
    tls_context = build_tls_context(config)  # a bad certificate stops the start here
    store = await Store.open(config.store.url)
    res = Resources(config, clock, metrics, store, build_delivery(config, clock))
    res.closers.append(store.close)
    writer = RecordWriter(store, metrics)
    pipeline = Pipeline(build_checks(res), metrics)
    queue_stage = QueueStage(pipeline, res.delivery, clock=clock, metrics=metrics,
                             deadline_s=config.scan.deadline_s,
                             notifier=build_virus_notifier(res) if pipeline.runs(Stage.QUEUE)
                             else None,
                             quarantine=build_quarantine(res))
    services = Services.build(config, clock=clock, metrics=metrics, pipeline=pipeline,
                              queue_stage=queue_stage, record=writer.put,
                              on_accepted=res.on_accepted)
    services.tls = tls_context
    services.auth = build_smtp_auth(config, store, clock, metrics)
    server = SmtpServer(services)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    writer.start()
    try:
        await server.start()
        if config.metrics.listen:
            metrics_server = MetricsServer(metrics, config.metrics.listen)
            await metrics_server.start()
            res.closers.append(metrics_server.stop)
        if config.control.enabled:  # after the listeners; its closer waits for hand-overs
            await start_control(res, services, server.tracker)
        log.info("event=ready hostname=%s domains=%s delivery=%s store=%s",
                 config.server.hostname, ",".join(config.server.local_domains) or "-",
                 config.delivery.method, _redact(config.store.url))
        await stop.wait()
        await server.shutdown(config.server.shutdown_grace_s)
    finally:
        # The signal handlers stay until the loop closes: a second SIGTERM during the
        # shutdown must not kill a hand-over in progress.
        await writer.stop()
        await res.close()
    log.info("event=stopped")
    return 0


def _redact(url: str) -> str:
    """Hide a password in a database URL."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{rest.split('@', 1)[1]}"
    return url
