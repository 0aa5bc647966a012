"""Assembles the daemon from its configuration and runs it until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailguard.checks.dnsbl import build_dnsbl
from mailguard.checks.greylist import build_greylist
from mailguard.checks.limits import build_limits
from mailguard.checks.relay import BadMailFromCheck, RelayCheck
from mailguard.checks.spf import build_spf
from mailguard.checks.tarpit import build_tarpit
from mailguard.clock import Clock, SystemClock
from mailguard.config import Config
from mailguard.control.daemon import start_control
from mailguard.delivery.base import Delivery
from mailguard.delivery.handover import MaildirDelivery, QmailQueueDelivery
from mailguard.delivery.maildir import MaildirSpool
from mailguard.dnsresolve import DnsResolver
from mailguard.frontend.metrics_http import MetricsServer
from mailguard.frontend.server import SmtpServer
from mailguard.frontend.services import Services
from mailguard.frontend.smtpauth import build_smtp_auth
from mailguard.frontend.tls import build_tls_context
from mailguard.metrics import Metrics
from mailguard.notify.virus import MailNotifier
from mailguard.pipeline import Check, Pipeline
from mailguard.policy import CheckPolicy, Mode
from mailguard.scanning.wiring import install_scanning, scanning_enabled
from mailguard.store.records import MessageRecord
from mailguard.store.repo import Store

log = logging.getLogger("mailguard.daemon")


class RecordWriter:
    """Writes message records to the store off the SMTP path: a slow or broken database
    costs statistics (logged and counted), never a reply."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
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
                await self._store.record_messages(batch)
            except Exception as exc:  # statistics must never stop the daemon
                self._metrics.inc("mailguard_store_errors_total", kind="write")
                log.warning("event=store_error records=%d error=%r", len(batch), str(exc))

    async def stop(self) -> None:
        await self._queue.put(None)
        if self._task is not None:
            await self._task


@dataclass
class Resources:
    """The long-lived clients a daemon builds once and passes to its checks."""

    config: Config
    clock: Clock
    metrics: Metrics
    store: Store
    delivery: Delivery
    # what `mailguard queue` (QMAILQUEUE) hands messages to; None = the real qmail-queue
    # of `[delivery] qmail_queue` (the scanning engine wraps it)
    queue_delivery: Delivery | None = None
    # called (in reverse order) when the daemon stops: close clients, flush, etc.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _resolver: DnsResolver | None = field(default=None, repr=False)

    def resolver(self) -> DnsResolver:
        """The one DNS resolver (from `[dns]`, built on first use), shared by every check."""
        if self._resolver is None:
            self._resolver = DnsResolver.from_config(self.config.dns, self.clock)
        return self._resolver

    async def close(self) -> None:
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                await closer()


def build_delivery(config: Config, clock: Clock) -> Delivery:
    d = config.delivery
    if d.method == "qmail-queue":
        return QmailQueueDelivery([d.qmail_queue], clock, timeout_s=d.timeout_s)
    return MaildirDelivery(MaildirSpool(Path(d.spool), clock), clock)


def build_checks(res: Resources, services: Services) -> list[tuple[Check, CheckPolicy]]:
    """The ordered check list: one line per check. Relay control is always enforced."""
    config = res.config
    server = config.server
    return [
        (build_dnsbl(res), config.policy("dnsbl")),
        build_spf(res),  # at MAIL: greylisting (RCPT) may key on its result
        (BadMailFromCheck(server.badmailfrom), config.policy("badmailfrom")),
        (RelayCheck(services.is_local_domain), CheckPolicy(mode=Mode.ENFORCE)),
        build_greylist(res),  # after relay control: only deliverable recipients are greylisted
        build_tarpit(res),  # after the checks that refuse: only accepted RCPTs wait
        build_limits(res, services),  # last; counts only mail the hand-over accepted
    ]


def build_virus_notifier(res: Resources, is_local: Callable[[str], bool]) -> MailNotifier:
    """Virus warnings go through the plain delivery (never through the scanner again)."""
    from mailguard.notify.languages import prefs_languages  # noqa: PLC0415
    from mailguard.notify.templates import TemplateSet  # noqa: PLC0415
    from mailguard.store.prefs import PrefsStore  # noqa: PLC0415

    c = res.config
    return MailNotifier(
        res.delivery,
        cfg=c.virus,
        hostname=c.server.hostname,
        is_local=is_local,
        clock=res.clock,
        templates=TemplateSet.load(c.virus.templates_dir or None),
        languages=prefs_languages(PrefsStore(res.store.db)),
        metrics=res.metrics,
    )


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
    services = Services.build(
        config,
        clock=clock,
        metrics=metrics,
        pipeline=Pipeline([], metrics),
        delivery=res.delivery,
        record=writer.put,
    )
    if scanning_enabled(config):  # [clamd]/[spamd]: the QUEUE stage wraps both deliveries
        install_scanning(res, build_virus_notifier(res, services.is_local_domain))
        services.delivery = res.delivery
    services.pipeline = Pipeline(build_checks(res, services), metrics)
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
