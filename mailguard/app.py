"""Assembles the daemon from its configuration and runs it until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from mailguard import registry, summary
from mailguard.clock import Clock, SystemClock
from mailguard.config import Config
from mailguard.control.daemon import start_control
from mailguard.delivery.methods import build_delivery
from mailguard.frontend.live import LiveServices
from mailguard.frontend.metrics_http import MetricsServer, StoreGauges
from mailguard.frontend.server import SmtpServer
from mailguard.frontend.services import Services
from mailguard.frontend.smtpauth import build_smtp_auth
from mailguard.frontend.tls import build_tls_context
from mailguard.housekeeping import start_housekeeping
from mailguard.metrics import Metrics
from mailguard.notify.virus import MailNotifier
from mailguard.notify.watchdog import start_watchdog
from mailguard.pipeline import Check, Pipeline
from mailguard.policy import CheckPolicy, Mode
from mailguard.quarantine import QuarantineService
from mailguard.resources import Resources
from mailguard.scanning.stage import QueueStage
from mailguard.store.message_log import MessageLogStore
from mailguard.store.records import MessageRecord
from mailguard.store.repo import Store
from mailguard.verdict import Stage

if TYPE_CHECKING:
    from mailguard.frontend.listeners import WorkerSetup

log = logging.getLogger("mailguard.daemon")

RECORD_LINGER_S = 1.0  # message log / statistics rows wait at most this long
RECORD_BATCH = 500  # records per database transaction


class RecordWriter:
    """Writes message records to the store off the SMTP path: a slow or broken database
    costs statistics (logged and counted), never a reply."""

    def __init__(self, store: Store, metrics: Metrics, clock: Clock, *,
                 linger_s: float = RECORD_LINGER_S) -> None:
        self._log = MessageLogStore(store.db)
        self._metrics = metrics
        self._clock = clock
        self._linger_s = linger_s
        self._queue: asyncio.Queue[MessageRecord | None] = asyncio.Queue(maxsize=10_000)
        self._stopping = asyncio.Event()
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
            await self._linger()
            batch = [first]
            # what queued up while the last write ran goes in one database transaction
            while len(batch) < RECORD_BATCH and not self._queue.empty():
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

    async def _linger(self) -> None:
        """Let a second's records gather before writing them: one transaction (and one
        commit) for all of them, where one per message cost a commit, an insert and two
        statistics upserts each (a quarter of the daemon's samples with one sender at a
        time). Skipped when a full batch is already waiting, cut short when the daemon
        stops."""
        if (self._linger_s <= 0 or self._stopping.is_set()
                or self._queue.qsize() >= RECORD_BATCH):
            return
        sleep = asyncio.ensure_future(self._clock.sleep(self._linger_s))
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleep, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            stop.cancel()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued; a store that does not answer (a hung server, a silently
        dropped connection: queries have no timeout) must not keep the daemon from
        stopping, so after `timeout_s` the write is cancelled and the records are lost."""
        self._stopping.set()
        await self._queue.put(None)
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
        if not done:
            self._task.cancel()
            self._metrics.inc("mailguard_store_errors_total", kind="write")
            log.warning("event=store_error error='message log writer stuck at shutdown: "
                        "cancelled after %gs'", timeout_s)
            await asyncio.wait({self._task})


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


def build_services(config: Config, *, clock: Clock, metrics: Metrics, store: Store,
                   record: Callable[[MessageRecord], None],
                   previous: Services | None = None) -> tuple[Services, Resources]:
    """One generation of the daemon's parts from `config`: checks, pipeline, QUEUE stage,
    TLS context and AUTH. The store, metrics and clock are the daemon's for its whole
    life; a reload builds a new generation around them (AUTH, with its failure counters,
    is kept when `[auth]` did not change). Raises ConfigError (e.g. a certificate that
    does not load)."""
    tls_context = build_tls_context(config)  # a bad certificate stops the build here
    res = Resources(config, clock, metrics, store, build_delivery(config, clock, metrics))
    pipeline = Pipeline(build_checks(res), metrics)
    queue_stage = QueueStage(pipeline, res.delivery, clock=clock, metrics=metrics,
                             deadline_s=config.scan.deadline_s,
                             notifier=build_virus_notifier(res) if pipeline.runs(Stage.QUEUE)
                             else None,
                             quarantine=build_quarantine(res))
    services = Services.build(config, clock=clock, metrics=metrics, pipeline=pipeline,
                              queue_stage=queue_stage, record=record,
                              on_accepted=res.on_accepted)
    services.tls = tls_context
    if previous is not None:
        services.tasks = previous.tasks  # hand-overs of every generation finish at shutdown
    if previous is not None and previous.config.auth == config.auth:
        services.auth = previous.auth
    else:
        services.auth = build_smtp_auth(config, store, clock, metrics)
    return services, res


# What a running daemon cannot change: it is bound, opened or set up once. A reload
# that changes one of these logs it and keeps the running value.
RESTART_ONLY = (("server", "listen"), ("server", "workers"), ("tls", "smtps_listen"),
                ("store", "url"),
                ("control", None), ("metrics", "listen"), ("log", None),
                ("alerts", None), ("stats", None))  # watchdog, housekeeping: started once


def keep_restart_only(old: Config, new: Config) -> tuple[Config, list[str]]:
    """`new` with the RESTART_ONLY values of `old`, and the names of those that differ."""
    changed: list[str] = []
    for section, key in RESTART_ONLY:
        was, now = getattr(old, section), getattr(new, section)
        if key is None:
            if was != now:
                changed.append(section)
                new = replace(new, **{section: was})
        elif getattr(was, key) != getattr(now, key):
            changed.append(f"{section}.{key}")
            new = replace(new, **{section: replace(now, **{key: getattr(was, key)})})
    return new, changed


async def run_daemon(config: Config, *, clock: Clock | None = None,
                     reload_config: Callable[[], Config] | None = None,
                     worker: WorkerSetup | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit status. `reload_config` reads
    the configuration again (file, command-line flags, control files): on SIGHUP and
    when a qmail control file changes (docs/drop-in.md); None = no reloading. `worker`:
    this process is one of a supervisor's workers (mailguard/workers.py): it serves the
    sockets the supervisor bound and writes its metrics where the others do."""
    clock = clock or SystemClock()
    metrics = Metrics(worker.metrics_dir if worker is not None else None)
    summary.declare_metrics(metrics)  # transactions: counts and duration
    metrics.declare("mailguard_connections_open", "gauge", "SMTP sessions open",
                    aggregate="livesum")
    metrics.declare("mailguard_connections_total", "counter", "SMTP connections accepted")
    metrics.declare("mailguard_reloads_total", "counter", "configuration reloads by outcome")
    build_tls_context(config)  # a bad certificate stops the start before the store opens
    store = await Store.open(config.store.url)
    writer = RecordWriter(store, metrics, clock)
    services, res = build_services(config, clock=clock, metrics=metrics, store=store,
                                   record=writer.put)
    res.closers.append(store.close)

    def rebuild(why: str) -> Services:
        assert reload_config is not None
        current = live.services
        try:
            fresh, restart = keep_restart_only(current.config, reload_config())
            built, built_res = build_services(fresh, clock=clock, metrics=metrics,
                                              store=store, record=writer.put,
                                              previous=current)
        except Exception:
            metrics.inc("mailguard_reloads_total", outcome="failed")
            raise
        if restart:
            log.warning("event=reload_restart_needed reason=%r keys=%s kept=running values",
                        why, ",".join(restart))
        metrics.inc("mailguard_reloads_total", outcome="ok")
        # what the new checks opened closes at shutdown, after the control socket's
        # hand-overs (which may still use them) and before the store
        after_store = res.closers.index(store.close) + 1  # closers run last to first
        res.closers[after_store:after_store] = built_res.closers
        return built

    def sighup() -> None:
        live.reload("SIGHUP")

    live = LiveServices(services, rebuild if reload_config is not None else None)
    server = SmtpServer(live)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, sighup)
    writer.start()
    try:
        await server.start(worker.listeners if worker is not None else None)
        if config.metrics.listen:
            gauges = StoreGauges(store.db, metrics, clock,
                                 whitelist_after=config.greylist.auto_whitelist_after)
            metrics_server = MetricsServer(metrics, config.metrics.listen,
                                           refresh=gauges.refresh)
            await metrics_server.start(worker.listeners.metrics if worker is not None else ())
            res.closers.append(metrics_server.stop)
        res.closers.append(start_watchdog(config, metrics=metrics, db=store.db, clock=clock).stop)
        res.closers.append(start_housekeeping(config.stats, store.db, clock).stop)
        if worker is None:
            if config.control.enabled:  # after the listeners; its closer waits for hand-overs
                await start_control(res, live, server.tracker)
            log.info("event=ready %s", ready_fields(config))
        else:
            if worker.listeners.control is not None:  # None: off, or the supervisor failed
                await start_control(res, live, server.tracker,
                                    inherited=worker.listeners.control)
            log.info("event=worker_ready worker=%d pid=%d", worker.index, os.getpid())
            worker.ready()
        await stop.wait()
        await server.shutdown(config.server.shutdown_grace_s)
    finally:
        # The signal handlers stay until the loop closes: a second SIGTERM during the
        # shutdown must not kill a hand-over in progress.
        await writer.stop()
        await res.close()
        metrics.close()
    log.info("event=stopped")
    return 0


def ready_fields(config: Config) -> str:
    """What the `event=ready` line tells about the configuration."""
    return (f"hostname={config.server.hostname} "
            f"domains={','.join(config.server.local_domains) or '-'} "
            f"delivery={config.delivery.method} store={_redact(config.store.url)}")


def _redact(url: str) -> str:
    """Hide a password in a database URL."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{rest.split('@', 1)[1]}"
    return url
