"""The daemon's alert watchdog: every `[alerts] check_s` it reads the daemon's own metrics
and raises or resolves incidents through the Alerter (one mail per incident, reminders,
a note when it is over):

- `scanner:<name>:<host>` — `mailguard_scanner_up{scanner}` has been 0 (its last scans
  failed) for `scanner_down_s`; over when a scan gets an answer again;
- `dnsbl:<zone>:<host>` — `mailguard_dnsbl_zone_up{zone}` is 0: its health probe
  disabled the zone; over when the probe passes again;
- `queue-handoff:<host>` — at least `handoff_failures` hand-offs to the queue were
  refused or failed within `handoff_window_s`; over when a window has fewer.

`assess` is the decision (pure, tested with tables); `Watchdog` is the loop around it.
Each worker process watches its own metrics; the store's claim sends one mail per
incident whichever worker sees it first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailguard.clock import Clock
from mailguard.errors import MailguardError
from mailguard.metrics import Metrics
from mailguard.notify.incidents import Alerter
from mailguard.settings.alerts import AlertsConfig

if TYPE_CHECKING:
    from mailguard.config import Config
    from mailguard.store.database import Database

log = logging.getLogger("mailguard.alerts")

Series = Sequence[tuple[dict[str, str], float]]
KINDS = ("scanner", "dnsbl", "queue_handoff")  # what this watchdog raises and resolves


@dataclass(frozen=True, slots=True)
class Finding:
    """An incident seen now."""

    key: str
    kind: str
    summary: str
    details: tuple[str, ...] = ()


@dataclass
class WatchState:
    """What the watchdog remembers between looks."""

    down_since: dict[str, float] = field(default_factory=dict)  # scanner -> first seen down
    # (time, hand-off failures counted so far): the window's baseline and its samples
    handoffs: deque[tuple[float, float]] = field(default_factory=deque)


def assess(state: WatchState, *, now: float, cfg: AlertsConfig, host: str,
           scanners: Series, zones: Series, handoffs: Series) -> tuple[list[Finding], set[str]]:
    """The incidents seen now, and the keys of those that are over (to resolve)."""
    found: list[Finding] = []
    fine: set[str] = set()
    for labels, up in scanners:
        name = labels.get("scanner", "?")
        key = f"scanner:{name}:{host}"
        if up:
            state.down_since.pop(name, None)
            fine.add(key)
            continue
        since = state.down_since.setdefault(name, now)
        if now - since >= cfg.scanner_down_s:
            found.append(Finding(key, "scanner", f"{name} unreachable on {host}", (
                f"The last scans through {name} failed, for at least {int(now - since)} s.",
                f"Mail waits (451) or passes unscanned, as [checks.{name}] on_error says.",
                "It is over when a scan gets an answer again.")))
    for labels, up in zones:
        zone = labels.get("zone", "?")
        key = f"dnsbl:{zone}:{host}"
        if up:
            fine.add(key)
        else:
            found.append(Finding(key, "dnsbl", f"DNSBL zone {zone} disabled on {host}", (
                f"The health probe of {zone} failed: the zone is not used until it passes",
                "again (docs/dnsbl.md). Check the zone's name, your resolver, and whether",
                "the list still answers your queries.")))
    if cfg.handoff_failures:
        failed = sum(v for labels, v in handoffs if labels.get("result") != "accepted")
        window = state.handoffs
        window.append((now, failed))
        while len(window) > 1 and window[1][0] <= now - cfg.handoff_window_s:
            window.popleft()  # keep one sample at or before the window's start
        recent = failed - window[0][1]
        key = f"queue-handoff:{host}"
        if recent >= cfg.handoff_failures:
            found.append(Finding(key, "queue_handoff",
                                 f"{int(recent)} queue hand-offs failed on {host}", (
                f"{int(recent)} hand-offs to the queue were refused or failed in the last "
                f"{cfg.handoff_window_s} s (threshold {cfg.handoff_failures}).",
                "Clients get 451 and retry; see the log's event=delivery_failed lines.")))
        else:
            fine.add(key)
    return found, fine


class Watchdog:
    """Runs `assess` every `check_s` on the daemon's metrics and tells the Alerter."""

    def __init__(self, cfg: AlertsConfig, alerter: Alerter, metrics: Metrics, clock: Clock,
                 host: str) -> None:
        self._cfg = cfg
        self._alerter = alerter
        self._metrics = metrics
        self._clock = clock
        self._host = host
        self._state = WatchState()
        self._state.handoffs.append((clock.now(), 0.0))  # counters start at 0 with us
        self._open: set[str] | None = None  # incidents of ours that are open
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        """One look: raise what is wrong, resolve what is over (store errors are logged)."""
        try:
            if self._open is None:  # incidents left open by our previous run, too
                self._open = {a.key for a in await self._alerter.store.list_open()
                              if a.kind in KINDS and a.key.endswith(f":{self._host}")}
            found, fine = assess(
                self._state, now=self._clock.now(), cfg=self._cfg, host=self._host,
                scanners=self._metrics.series("mailguard_scanner_up"),
                zones=self._metrics.series("mailguard_dnsbl_zone_up"),
                handoffs=self._metrics.series("mailguard_queue_handoffs_total"))
            for f in found:
                await self._alerter.raise_alert(f.key, f.kind, f.summary, f.details)
                self._open.add(f.key)
            for key in sorted(fine & self._open):
                await self._alerter.resolve(key)
                self._open.discard(key)
        except MailguardError as exc:  # the store is down: try again at the next look
            log.error("event=alert_watchdog_failed error=%r", str(exc))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._clock.sleep(self._cfg.check_s)
            await self.tick()


def start_watchdog(config: Config, *, metrics: Metrics, db: Database,
                   clock: Clock) -> Watchdog:
    """The daemon's watchdog, running: alert mail goes through the plain `[delivery]`
    (built here, so the mail neither passes the scanners nor counts as a hand-off)."""
    import socket  # noqa: PLC0415

    from mailguard.delivery.methods import build_delivery  # noqa: PLC0415
    from mailguard.store.alerts import AlertStore  # noqa: PLC0415

    host = config.server.hostname or socket.gethostname()
    alerter = Alerter(config.alerts, AlertStore(db), build_delivery(config, clock),
                      clock=clock, hostname=host)
    dog = Watchdog(config.alerts, alerter, metrics, clock, host)
    dog.start()
    return dog
