"""Builders of the delivery methods named in the registry (`[delivery] method`)."""

from __future__ import annotations

from pathlib import Path

from mailguard import registry
from mailguard.clock import Clock
from mailguard.config import Config
from mailguard.delivery.base import Delivery


def build_maildir(config: Config, clock: Clock) -> Delivery:
    from mailguard.delivery.maildir import MaildirDelivery, MaildirSpool  # noqa: PLC0415

    return MaildirDelivery(MaildirSpool(Path(config.delivery.spool), clock), clock)


def build_qmail_queue(config: Config, clock: Clock) -> Delivery:
    from mailguard.delivery.qmail_queue import QmailQueueDelivery  # noqa: PLC0415

    d = config.delivery
    return QmailQueueDelivery([d.qmail_queue], clock, timeout_s=d.timeout_s)


def build_delivery(config: Config, clock: Clock) -> Delivery:
    """The plain hand-over named by `[delivery] method` (the registry's DELIVERIES)."""
    spec = next(d for d in registry.DELIVERIES if d.name == config.delivery.method)
    delivery: Delivery = spec.load_builder()(config, clock)
    return delivery
