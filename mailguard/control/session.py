"""The `smtp` op: adopt a client connection handed over by `mailguard smtpd` (under
tcpserver) and run it as a daemon session, with qmail-smtpd's environment semantics:

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

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mailguard.control.server import Reply
from mailguard.delivery.handover import QmailQueueDelivery
from mailguard.frontend.protocol import MailguardSMTP, Tracker
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
        changes["delivery"] = QmailQueueDelivery(
            [program], services.clock, timeout_s=config.delivery.timeout_s, env=dict(env)
        )
    elif program:
        # The daemon may run as root while anyone on the control socket chooses the
        # environment: never exec an arbitrary program from it.
        log.warning("event=qmailqueue_ignored program=%r reason=not in "
                    "control.qmailqueue_allowed", program)
    return replace(services, **changes) if changes else services


def env_from(request: Mapping[str, Any]) -> dict[str, str]:
    env = request.get("env")
    if not isinstance(env, dict):
        return {}
    return {str(k): str(v) for k, v in env.items() if isinstance(v, str)}


class SmtpOp:
    """Handler of `smtp` requests; replies `done` once the session has ended, so the
    per-connection process exits then and tcpserver's concurrency count stays right."""

    def __init__(self, services: Services, tracker: Tracker) -> None:
        self._services = services
        self._tracker = tracker

    async def __call__(self, request: dict[str, Any], fds: list[int], reply: Reply) -> None:
        for extra in fds[1:]:
            os.close(extra)
        if not fds:
            await reply({"error": "no client descriptor"})
            return
        if self._tracker.shutting_down:
            os.close(fds[0])
            await reply({"error": "shutting down"})
            return
        try:
            sock = socket.socket(fileno=fds[0])
        except OSError as exc:  # not a socket (stdin a pipe or a terminal)
            os.close(fds[0])
            await reply({"error": f"descriptor 0 is not a socket: {exc.strerror}"})
            return
        if sock.type != socket.SOCK_STREAM:
            sock.close()
            await reply({"error": "descriptor 0 is not a stream socket"})
            return
        env = env_from(request)
        services = session_services(self._services, env)
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        async def on_close() -> None:
            if not ended.done():
                ended.set_result(None)

        sock.setblocking(False)
        try:
            await loop.connect_accepted_socket(
                lambda: MailguardSMTP(services, self._tracker, env=env, on_close=on_close),
                sock,
            )
        except OSError as exc:
            sock.close()
            await reply({"error": f"cannot adopt the connection: {exc}"})
            return
        await ended
        await reply({"done": True})
