"""Builders of the delivery methods named in the registry (`[delivery] method`)."""

from __future__ import annotations

from pathlib import Path

from mailguard import registry
from mailguard.clock import Clock
from mailguard.config import Config
from mailguard.delivery.base import Delivery
from mailguard.metrics import Metrics


def build_maildir(config: Config, clock: Clock) -> Delivery:
    from mailguard.delivery.maildir import MaildirDelivery, MaildirSpool  # noqa: PLC0415

    return MaildirDelivery(MaildirSpool(Path(config.delivery.spool), clock), clock)


def build_qmail_queue(config: Config, clock: Clock) -> Delivery:
    from mailguard.delivery.qmail_queue import QmailQueueDelivery  # noqa: PLC0415

    d = config.delivery
    return QmailQueueDelivery([d.qmail_queue], clock, timeout_s=d.timeout_s)


def build_delivery(config: Config, clock: Clock, metrics: Metrics | None = None) -> Delivery:
    """The plain hand-over named by `[delivery] method` (the registry's DELIVERIES);
    with `metrics`, each hand-off is timed (`mailguard_queue_handoff_seconds`)."""
    from mailguard.delivery.timed import timed  # noqa: PLC0415

    spec = next(d for d in registry.DELIVERIES if d.name == config.delivery.method)
    delivery: Delivery = spec.load_builder()(config, clock)
    return delivery if metrics is None else timed(delivery, spec.name, clock, metrics)
