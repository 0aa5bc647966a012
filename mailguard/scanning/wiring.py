"""Building the QUEUE stage from the configuration: clients built once, at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailguard.delivery.base import Delivery
from mailguard.delivery.handover import QmailQueueDelivery
from mailguard.scanners.clamd import ClamdClient
from mailguard.scanners.spamd import SpamdClient
from mailguard.scanning.engine import ScanningDelivery, ScanSetup, declare_metrics
from mailguard.scanning.notify_api import VirusNotifier

if TYPE_CHECKING:
    from mailguard.app import Resources
    from mailguard.config import Config


def scanning_enabled(config: Config) -> bool:
    return config.clamd.enabled or bool(config.spamd.servers)


def build_setup(res: Resources) -> ScanSetup:
    """The clients and settings from `[clamd]`, `[spamd]`, `[spam]`, `[scan]`."""
    from mailguard.store.prefs import PrefsStore  # noqa: PLC0415 - SQLAlchemy only here

    cfg = res.config
    clamd = None
    if cfg.clamd.enabled:
        clamd = ClamdClient(cfg.clamd.servers, connect_timeout_s=cfg.clamd.connect_timeout_s,
                            scan_timeout_s=cfg.clamd.scan_timeout_s,
                            max_size_bytes=cfg.clamd.max_size_bytes)
    spamd = SpamdClient(cfg.spamd.servers, timeout_s=cfg.spamd.timeout_s) \
        if cfg.spamd.servers else None
    return ScanSetup(
        clamd=clamd, spamd=spamd, prefs=PrefsStore(res.store.db) if spamd else None,
        clamd_cfg=cfg.clamd, spamd_cfg=cfg.spamd, spam_cfg=cfg.spam,
        deadline_s=cfg.scan.deadline_s,
    )


def wrap(res: Resources, inner: Delivery, setup: ScanSetup,
         notifier: VirusNotifier | None = None) -> Delivery:
    return ScanningDelivery(inner, setup, clock=res.clock, metrics=res.metrics,
                            notifier=notifier)


def install_scanning(res: Resources, notifier: VirusNotifier | None = None) -> None:
    """When `[clamd] enabled` or `[spamd] servers` is set: wrap `res.delivery` (mail the
    daemon accepts over SMTP) and `res.queue_delivery` (mail from `mailguard queue`,
    default the real qmail-queue) in the scanning engine, sharing one set of clients."""
    if not scanning_enabled(res.config):
        return
    setup = build_setup(res)
    declare_metrics(res.metrics)
    d = res.config.delivery
    queue_inner = res.queue_delivery or QmailQueueDelivery(
        [d.qmail_queue], res.clock, timeout_s=d.timeout_s)
    res.delivery = wrap(res, res.delivery, setup, notifier)
    res.queue_delivery = wrap(res, queue_inner, setup, notifier)
