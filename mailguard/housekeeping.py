"""The daemon's housekeeping: every `[stats] purge_every_s`, in the background, drop
message_log rows and statistics buckets past their retention. Purges run in batches
(each its own short transaction), so the SMTP path's writes are never held up; several
workers or MX hosts purging at once only find less to delete."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailguard.clock import Clock
from mailguard.errors import MailguardError
from mailguard.settings.stats import StatsConfig
from mailguard.store.database import Database
from mailguard.store.message_log import MessageLogStore
from mailguard.store.stats import Retention, StatsStore

log = logging.getLogger("mailguard.housekeeping")
STOP_TIMEOUT_S = 5.0


def retention(cfg: StatsConfig) -> Retention:
    return Retention(cfg.five_min_days, cfg.hourly_days, cfg.daily_days)


async def purge_once(cfg: StatsConfig, db: Database, now: float) -> tuple[int, int]:
    """(message_log rows, statistics buckets) deleted."""
    rows = await MessageLogStore(db).purge(now - cfg.message_log_days * 86400)
    buckets = await StatsStore(db).purge(now, retention(cfg))
    return rows, buckets


class Housekeeper:
    def __init__(self, cfg: StatsConfig, db: Database, clock: Clock) -> None:
        self._cfg = cfg
        self._db = db
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                rows, buckets = await purge_once(self._cfg, self._db, self._clock.now())
                if rows or buckets:
                    log.info("event=purged message_log=%d stats_buckets=%d", rows, buckets)
            except MailguardError as exc:
                log.error("event=purge_failed error=%r", str(exc))
            await self._clock.sleep(self._cfg.purge_every_s)

    async def stop(self) -> None:
        """Cancel the loop; a purge stuck on a hung store (asyncpg's cancel itself waits
        for the server) is abandoned after STOP_TIMEOUT_S, so shutdown stays bounded."""
        if self._task is None:
            return
        self._task.cancel()
        done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
        if not done:
            log.warning("event=purge_abandoned reason=%r",
                        f"store not answering, gave up after {STOP_TIMEOUT_S:g}s")
            return
        with contextlib.suppress(asyncio.CancelledError, MailguardError):
            self._task.result()


def start_housekeeping(cfg: StatsConfig, db: Database, clock: Clock) -> Housekeeper:
    keeper = Housekeeper(cfg, db, clock)
    keeper.start()
    return keeper
