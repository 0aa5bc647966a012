"""What every SMTP session of a daemon shares: built once at start-up and passed down."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailguard.clock import Clock
from mailguard.config import Config
from mailguard.context import IPAddress, Session, Transaction
from mailguard.delivery.base import Delivery
from mailguard.domains import LocalDomains
from mailguard.errors import TemporaryError
from mailguard.metrics import Metrics
from mailguard.pipeline import Pipeline
from mailguard.qmail.control import SmtpdTexts, smtpd_texts
from mailguard.resources import AcceptedHook
from mailguard.scanning.stage import QueueStage
from mailguard.store.records import MessageRecord

if TYPE_CHECKING:
    from mailguard.frontend.smtpauth import SmtpAuth

Recorder = Callable[[MessageRecord], None]

log = logging.getLogger("mailguard.smtp")


def _no_record(_: MessageRecord) -> None:
    """Used when no store is attached (tests of the protocol alone)."""


@dataclass
class Services:
    """The daemon's long-lived parts. `record` must not block: it queues the record."""

    config: Config
    clock: Clock
    metrics: Metrics
    pipeline: Pipeline
    queue_stage: QueueStage  # the QUEUE-stage checks and the hand-over
    record: Recorder = _no_record
    relay_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    domains: LocalDomains = field(default_factory=LocalDomains)
    tasks: set[asyncio.Future[Any]] = field(default_factory=set)
    tls: ssl.SSLContext | None = None  # STARTTLS / SMTPS; None = no certificate configured
    auth: SmtpAuth | None = None  # SMTP AUTH; None = not built (then AUTH is unimplemented)
    on_accepted: list[tuple[str, AcceptedHook]] = field(default_factory=list)  # (name, hook)
    texts: SmtpdTexts = field(default_factory=SmtpdTexts)  # HELP etc. of the qmail replaced

    @classmethod
    def build(
        cls,
        config: Config,
        *,
        clock: Clock,
        metrics: Metrics,
        pipeline: Pipeline,
        delivery: Delivery | None = None,
        queue_stage: QueueStage | None = None,
        record: Recorder = _no_record,
        on_accepted: Sequence[tuple[str, AcceptedHook]] = (),
    ) -> Services:
        """`queue_stage`, or one built on `pipeline` in front of `delivery`."""
        server = config.server
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in server.relay_networks)
        metrics.declare("mailguard_accepted_hook_errors_total", "counter",
                        "Failures of the work done after a message was accepted, by hook")
        if queue_stage is None:
            assert delivery is not None, "a delivery or a queue stage is needed"
            queue_stage = QueueStage(pipeline, delivery, clock=clock, metrics=metrics,
                                     deadline_s=config.scan.deadline_s)
        return cls(config, clock, metrics, pipeline, queue_stage, record, nets,
                   LocalDomains.parse(server.local_domains), on_accepted=list(on_accepted),
                   texts=smtpd_texts(server.qmail_control_dir))

    def track(self, task: asyncio.Future[Any]) -> None:
        """Keep a hand-over alive until done, even if its session goes away."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        """Wait for every tracked hand-over (shutdown)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def accepted(self, session: Session, tx: Transaction) -> None:
        """Run the `on_accepted` hooks, in order, for a message the hand-over accepted.
        The message is queued already: a failing hook is logged and counted, never
        turned into a different reply. Each hook bounds its own time."""
        for name, hook in self.on_accepted:
            try:
                await hook(session, tx)
            except Exception as exc:
                self.metrics.inc("mailguard_accepted_hook_errors_total", hook=name)
                log.error("event=accepted_hook_error hook=%s session=%s error=%r",
                          name, session.session_id, str(exc) or type(exc).__name__,
                          exc_info=not isinstance(exc, (TemporaryError, TimeoutError)))

    def is_relay_client(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.relay_networks)

    def is_local_domain(self, domain: str) -> bool:
        """qmail's rcpthosts rule: an exact entry, or a ".suffix" entry for subdomains."""
        return domain in self.domains

