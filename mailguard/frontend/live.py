"""The daemon's current Services, replaced whole by a reload (docs/drop-in.md, "Control
files and SIGHUP").

qmail-smtpd reads its control files at the start of every connection. The daemon keeps
them in its Services; `LiveServices.current()`, called once per new connection (own
listeners and drop-in sessions alike) and per `mailguard queue` message, stats the watched
control files (qmail/control.py `signature`: a dozen stats, no reads) and, when one
changed, has the whole configuration rebuilt before that connection starts. `SIGHUP`
asks for the same rebuild. A session keeps the Services it started with to its end, so
nothing changes under a transaction in flight."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mailguard.frontend.services import Services
from mailguard.qmail.control import Signature, signature

log = logging.getLogger("mailguard.daemon")

# builds the next Services from scratch (configuration file + control files); raises on
# a broken configuration, which the caller logs while the old Services stay in use
Rebuild = Callable[[str], Services]


class LiveServices:
    """Holds the Services new sessions get; `reload()` swaps in a rebuilt one."""

    def __init__(self, services: Services, rebuild: Rebuild | None = None) -> None:
        self.services = services
        self._rebuild = rebuild
        self._watch = services.config.server.qmail_control_dir
        self._signature: Signature | None = signature(self._watch) if self._watch else None
        self.on_swap: list[Callable[[Services], None]] = []  # e.g. the control socket's ops

    def current(self) -> Services:
        """The Services for a connection starting now, after rebuilding them when a
        control file changed since the last look."""
        if self._watch and self._rebuild is not None:
            now = signature(self._watch)
            if now != self._signature:
                self._signature = now  # a broken file is reported once, not per connection
                self.reload("control files changed")
        return self.services

    def reload(self, why: str) -> bool:
        """Rebuild from the configuration; True when the new Services are in use. A
        configuration that does not load is logged and the old one stays."""
        if self._rebuild is None:
            return False
        # taken before reading: a file changed while we read is seen at the next look
        before = signature(self._watch) if self._watch else None
        try:
            fresh = self._rebuild(why)
        except Exception as exc:  # ConfigError, a certificate that does not load, a bug
            log.error("event=reload_failed reason=%r error=%r kept=previous configuration",
                      why, str(exc) or type(exc).__name__)
            return False
        self.services = fresh
        watch = fresh.config.server.qmail_control_dir
        if watch != self._watch:
            self._watch = watch
            before = signature(watch) if watch else None
        self._signature = before
        for listener in self.on_swap:
            listener(fresh)
        server = fresh.config.server
        log.info("event=reloaded reason=%r hostname=%s domains=%d databytes=%d timeout_s=%s",
                 why, server.hostname, len(server.local_domains), server.databytes or 0,
                 server.timeout_s)
        return True
