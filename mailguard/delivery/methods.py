"""Builders of the delivery methods named in the registry (`[delivery] method`)."""

from __future__ import annotations

from pathlib import Path

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
