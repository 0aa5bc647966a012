"""Wiring of the control socket into the daemon (called by app.run_daemon)."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

from mailguard.body import spooler_for
from mailguard.control.queueop import QueueOp
from mailguard.control.server import ControlError, ControlServer
from mailguard.control.smtpop import SmtpOp
from mailguard.delivery.methods import build_qmail_queue

if TYPE_CHECKING:
    from mailguard.control.server import Handler, Reply
    from mailguard.frontend.live import LiveServices
    from mailguard.frontend.protocol import Tracker
    from mailguard.frontend.services import Services
    from mailguard.resources import Resources

log = logging.getLogger("mailguard.control")


async def start_control(res: Resources, live: LiveServices, tracker: Tracker, *,
                        inherited: socket.socket | None = None) -> ControlServer | None:
    """Start the control socket; its closer (registered in `res`) lets queue hand-overs in
    flight finish. A socket that cannot be set up is logged and the daemon goes on serving
    SMTP: the drop-in processes then fail safe (421 / exit 71), nothing is accepted.
    Each request works with the Services current when it arrives (`live`: a reload or a
    changed control file swaps them). `inherited`: the listening socket a worker's
    supervisor bound, shared by every worker (docs/workers.md)."""
    config = res.config

    def queue_op(services: Services) -> QueueOp:
        # the daemon's own checks in front of the real qmail-queue
        cfg = services.config
        queue_delivery = res.queue_delivery or build_qmail_queue(cfg, res.clock)
        return QueueOp(services.queue_stage.with_delivery(queue_delivery), cfg.queue,
                       res.clock, metrics=res.metrics, record=services.record,
                       server=cfg.server, spooler=spooler_for(cfg))

    ops: dict[str, Handler] = {"queue": queue_op(live.services)}
    live.on_swap.append(lambda fresh: ops.update(queue=queue_op(fresh)))

    async def queue(request: dict[str, Any], fds: list[int], reply: Reply) -> None:
        live.current()  # a control file changed: rebuilt before this message
        await ops["queue"](request, fds, reply)

    control = ControlServer(
        config.control, {"smtp": SmtpOp(live, tracker), "queue": queue}, res.metrics
    )
    try:
        await control.start(inherited)
    except ControlError as exc:
        log.error("event=control_unavailable socket=%s error=%r", config.control.socket, str(exc))
        return None

    async def close() -> None:
        await control.close(config.queue.deadline_s)

    res.closers.append(close)
    return control
