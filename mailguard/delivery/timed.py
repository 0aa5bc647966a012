"""Queue hand-off time: a Delivery wrapper that records how long each hand-over took
(`mailguard_queue_handoff_seconds{method, result}`) and counts them."""

from __future__ import annotations

from collections.abc import Sequence

from mailguard.body import Message
from mailguard.clock import Clock
from mailguard.delivery.base import Delivered, Delivery, RefusesRecipients
from mailguard.metrics import Metrics
from mailguard.verdict import Reply

HANDOFF_SECONDS = "mailguard_queue_handoff_seconds"
HANDOFF_TOTAL = "mailguard_queue_handoffs_total"


def declare_metrics(metrics: Metrics) -> None:
    metrics.declare(HANDOFF_SECONDS, "histogram",
                    "time to hand a message to the queue (Maildir fsync, qmail-queue run)")
    metrics.declare(HANDOFF_TOTAL, "counter", "queue hand-offs by method and result")


class TimedDelivery:
    """`inner`, timed. result: `accepted`, `refused` (a reply that is not 250) or `error`
    (the hand-over raised)."""

    def __init__(self, inner: Delivery, method: str, clock: Clock, metrics: Metrics) -> None:
        self.inner = inner
        self._method = method
        self._clock = clock
        self._metrics = metrics
        declare_metrics(metrics)

    async def deliver(self, sender: str, rcpts: Sequence[str], message: Message, *,
                      authenticated: bool = False) -> Delivered:
        started = self._clock.monotonic()
        result = "error"
        try:
            delivered = await self.inner.deliver(sender, rcpts, message,
                                                 authenticated=authenticated)
            result = "accepted" if delivered.accepted else "refused"
            return delivered
        finally:
            self._metrics.observe(HANDOFF_SECONDS, self._clock.monotonic() - started,
                                  method=self._method)
            self._metrics.inc(HANDOFF_TOTAL, method=self._method, result=result)


class TimedRefusingDelivery(TimedDelivery):
    """A TimedDelivery around a delivery that refuses some recipients at RCPT."""

    def refuses(self, rcpt: str) -> Reply | None:
        assert isinstance(self.inner, RefusesRecipients)
        return self.inner.refuses(rcpt)


def timed(inner: Delivery, method: str, clock: Clock, metrics: Metrics) -> Delivery:
    """`inner` with its hand-offs timed; it still refuses at RCPT what `inner` refuses."""
    if isinstance(inner, RefusesRecipients):
        return TimedRefusingDelivery(inner, method, clock, metrics)
    return TimedDelivery(inner, method, clock, metrics)
