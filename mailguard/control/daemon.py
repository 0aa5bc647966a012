"""Wiring of the control socket into the daemon (called by app.run_daemon)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mailguard.control.queueop import QueueOp
from mailguard.control.server import ControlError, ControlServer
from mailguard.control.smtpop import SmtpOp
from mailguard.delivery.methods import build_qmail_queue

if TYPE_CHECKING:
    from mailguard.frontend.protocol import Tracker
    from mailguard.frontend.services import Services
    from mailguard.resources import Resources

log = logging.getLogger("mailguard.control")


async def start_control(res: Resources, services: Services,
                        tracker: Tracker) -> ControlServer | None:
    """Start the control socket; its closer (registered in `res`) lets queue hand-overs in
    flight finish. A socket that cannot be set up is logged and the daemon goes on serving
    SMTP: the drop-in processes then fail safe (421 / exit 71), nothing is accepted."""
    config = res.config
    queue_delivery = res.queue_delivery or build_qmail_queue(config, res.clock)
    # the daemon's own checks in front of the real qmail-queue
    queue_op = QueueOp(services.queue_stage.with_delivery(queue_delivery), config.queue,
                       res.clock, metrics=res.metrics, record=services.record,
                       max_bytes=config.server.databytes or config.server.max_message_bytes)
    control = ControlServer(
        config.control, {"smtp": SmtpOp(services, tracker), "queue": queue_op}, res.metrics
    )
    try:
        await control.start()
    except ControlError as exc:
        log.error("event=control_unavailable socket=%s error=%r", config.control.socket, str(exc))
        return None

    async def close() -> None:
        await control.close(config.queue.deadline_s)

    res.closers.append(close)
    return control
