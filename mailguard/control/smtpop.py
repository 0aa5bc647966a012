"""The `smtp` op: adopt a client connection handed over by `mailguard smtpd` (under
tcpserver) and run it as a daemon session, with qmail-smtpd's environment semantics
(control/environ.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from mailguard.control.environ import env_from, session_services
from mailguard.control.server import Reply
from mailguard.frontend.live import LiveServices
from mailguard.frontend.protocol import MailguardSMTP, Tracker

log = logging.getLogger("mailguard.control")


class SmtpOp:
    """Handler of `smtp` requests; replies `taken` when it adopts the connection, and
    `done` once the session has ended, so the per-connection process exits then and
    tcpserver's concurrency count stays right."""

    def __init__(self, live: LiveServices, tracker: Tracker) -> None:
        self._live = live
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
        except OSError as exc:  # not a socket (`mailguard smtpd` relays pipes itself)
            os.close(fds[0])
            await reply({"error": f"descriptor 0 is not a socket: {exc.strerror}"})
            return
        if sock.type != socket.SOCK_STREAM:
            sock.close()
            await reply({"error": "descriptor 0 is not a stream socket"})
            return
        # The acknowledgement comes first: `mailguard smtpd` answers 421 itself when it
        # does not get it within 5 s (a hung daemon), and has then closed the control
        # connection, so a failed send means the client was already told: not adopted.
        if not await reply({"taken": True}):
            sock.close()
            log.warning("event=smtp_abandoned error=%r",
                        "mailguard smtpd gave up before the daemon took the connection")
            return
        env = env_from(request)
        # qmail-smtpd reads its control files per connection: so does this (a stat each)
        services = session_services(self._live.current(), env)
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
