"""qmail-smtpd's environment semantics for a connection or message handed over by the lean
entry points (`mailguard smtpd` under tcpserver, `mailguard queue`):

- `RELAYCLIENT` set → the client may relay, and the value is appended to every recipient
  (applied by MailguardSMTP from `env`);
- `DATABYTES` → this session's size limit (qmail: leading digits, anything else is 0);
- `QMAILQUEUE` → this session's mail goes to that program instead of the daemon's
  delivery, with the session's environment, as qmail-smtpd would exec it — only for
  `delivery.qmail_queue` and the programs in `control.qmailqueue_allowed` (the daemon
  runs it with its own rights); any other value is logged and ignored;
- `TCPREMOTEIP`, `TCPREMOTEHOST`, `TCPLOCALIP`, `TCPREMOTEINFO` → the session's client
  facts and Received line; `RBLSMTPD`, `TARPIT*` … are read by the checks from `env`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mailguard.delivery.qmail_queue import QmailQueueDelivery
from mailguard.frontend.services import Services

log = logging.getLogger("mailguard.control")


def qmail_ulong(text: str) -> int:
    """qmail's scan_ulong: the leading decimal digits, 0 when there are none."""
    digits = ""
    for ch in text:
        if not ch.isascii() or not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


def env_from(request: Mapping[str, Any]) -> dict[str, str]:
    """The request's environment, string values only (anything else is dropped)."""
    env = request.get("env")
    if not isinstance(env, dict):
        return {}
    return {str(k): str(v) for k, v in env.items() if isinstance(v, str)}


def session_services(services: Services, env: Mapping[str, str]) -> Services:
    """The daemon's Services with this session's DATABYTES / QMAILQUEUE applied (a copy
    sharing everything else, so hand-overs stay tracked by the daemon)."""
    config = services.config
    changes: dict[str, Any] = {}
    if "DATABYTES" in env:
        server = replace(config.server, databytes=qmail_ulong(env["DATABYTES"]))
        changes["config"] = replace(config, server=server)
    program = env.get("QMAILQUEUE")
    allowed = (config.delivery.qmail_queue, *config.control.qmailqueue_allowed)
    if program and program in allowed:
        # the daemon's QUEUE-stage checks still run; the session's program queues
        changes["queue_stage"] = services.queue_stage.with_delivery(QmailQueueDelivery(
            [program], services.clock, timeout_s=config.delivery.timeout_s, env=dict(env)
        ))
    elif program:
        # The daemon may run as root while anyone on the control socket chooses the
        # environment: never exec an arbitrary program from it.
        log.warning("event=qmailqueue_ignored program=%r reason=not in "
                    "control.qmailqueue_allowed", program)
    return replace(services, **changes) if changes else services
