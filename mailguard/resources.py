"""The long-lived clients a daemon builds once and hands to the builders of its checks.

It sits below the checks (they import it; it imports none of them, nor the front end),
so a check gets what it needs from here instead of reaching into the assembly."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailguard.clock import Clock
from mailguard.config import Config
from mailguard.context import Session, Transaction
from mailguard.delivery.base import Delivery
from mailguard.domains import LocalDomains
from mailguard.metrics import Metrics

if TYPE_CHECKING:
    from mailguard.dnsresolve import DnsResolver
    from mailguard.store.repo import Store

# Runs after a hand-over accepted the message (the per-user limits count it there).
AcceptedHook = Callable[[Session, Transaction], Awaitable[None]]


@dataclass
class Resources:
    """What checks and deliveries are built from. `delivery` is the plain hand-over
    (Maildir or qmail-queue, never scanned: alerts and warnings go there too)."""

    config: Config
    clock: Clock
    metrics: Metrics
    store: Store
    delivery: Delivery
    # what `mailguard queue` (QMAILQUEUE) hands messages to once they passed the QUEUE
    # stage; None = the real qmail-queue of `[delivery] qmail_queue`
    queue_delivery: Delivery | None = None
    # work after a message was accepted, in order: (name, hook)
    on_accepted: list[tuple[str, AcceptedHook]] = field(default_factory=list)
    # called (in reverse order) when the daemon stops: close clients, flush, etc.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _resolver: DnsResolver | None = field(default=None, repr=False)
    _domains: LocalDomains | None = field(default=None, repr=False)

    def resolver(self) -> DnsResolver:
        """The one DNS resolver (from `[dns]`, built on first use), shared by every check."""
        if self._resolver is None:
            from mailguard.dnsresolve import DnsResolver  # noqa: PLC0415

            self._resolver = DnsResolver.from_config(self.config.dns, self.clock)
        return self._resolver

    def is_local_domain(self, domain: str) -> bool:
        """qmail's rcpthosts rule over `server.local_domains`."""
        if self._domains is None:
            self._domains = LocalDomains.parse(self.config.server.local_domains)
        return domain in self._domains

    async def close(self) -> None:
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                await closer()
