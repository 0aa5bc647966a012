"""What every SMTP session of a daemon shares: built once at start-up and passed down."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailguard.clock import Clock
from mailguard.config import Config
from mailguard.context import IPAddress
from mailguard.delivery.base import Delivery
from mailguard.metrics import Metrics
from mailguard.pipeline import Pipeline
from mailguard.store.records import MessageRecord

if TYPE_CHECKING:
    from mailguard.frontend.smtpauth import SmtpAuth

Recorder = Callable[[MessageRecord], None]


def _no_record(_: MessageRecord) -> None:
    """Used when no store is attached (tests of the protocol alone)."""


@dataclass
class Services:
    """The daemon's long-lived parts. `record` must not block: it queues the record."""

    config: Config
    clock: Clock
    metrics: Metrics
    pipeline: Pipeline
    delivery: Delivery
    record: Recorder = _no_record
    relay_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    local_domains: frozenset[str] = field(default_factory=frozenset)
    local_subdomains: tuple[str, ...] = ()  # rcpthosts entries with a leading "."
    tasks: set[asyncio.Future[Any]] = field(default_factory=set)
    tls: ssl.SSLContext | None = None  # STARTTLS / SMTPS; None = no certificate configured
    auth: SmtpAuth | None = None  # SMTP AUTH; None = not built (then AUTH is unimplemented)

    @classmethod
    def build(
        cls,
        config: Config,
        *,
        clock: Clock,
        metrics: Metrics,
        pipeline: Pipeline,
        delivery: Delivery,
        record: Recorder = _no_record,
    ) -> Services:
        server = config.server
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in server.relay_networks)
        exact, subs = _split_domains(server.local_domains)
        return cls(config, clock, metrics, pipeline, delivery, record, nets, exact, subs)

    def track(self, task: asyncio.Future[Any]) -> None:
        """Keep a hand-over alive until done, even if its session goes away."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        """Wait for every tracked hand-over (shutdown)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def is_relay_client(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.relay_networks)

    def is_local_domain(self, domain: str) -> bool:
        """qmail's rcpthosts rule: an exact entry, or a ".suffix" entry for subdomains."""
        d = domain.lower()
        if d in self.local_domains:
            return True
        return any(d.endswith(s) for s in self.local_subdomains)


def _split_domains(entries: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    exact: set[str] = set()
    subs: list[str] = []
    for entry in entries:
        e = entry.strip().lower()
        if not e:
            continue
        if e.startswith("."):
            subs.append(e)
        else:
            exact.add(e)
    return frozenset(exact), tuple(subs)
