"""`mailguard qmail-watch [--every SECONDS]`: the watch on qmail's own queue.

Each run reads the queue as qmail-qstat / qmail-qread do (mailguard.qmail.queue_watch),
stores the reading (kept `[qmail_watch] keep_readings_h`), and holds it against the
thresholds: past one it raises the incident `qmail-queue:<host>` (a mail to `[alerts] to`
when it begins, reminders while it lasts, a note when it is over) and, for the thresholds
of `restart_on`, runs `restart_command` — at most once per `restart_cooldown_s`, counted in
the store (`qmail-restart:<host>`), so one-shot runs from cron remember it and two hosts
watching one queue do not both restart it. Every run logs one `event=qmail_watch` line."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailguard.clock import Clock
    from mailguard.config import Config
    from mailguard.delivery.base import Delivery
    from mailguard.qmail.queue_watch import Exceeded, QueueReading
    from mailguard.store.database import Database

EXIT_THRESHOLD = 3  # one-shot: a threshold was passed

EPILOG = """\
exit status (one-shot):
  0  the queue is within every threshold
  1  runtime failure: the queue cannot be read, the store is unreachable
  2  usage or configuration error
  3  a threshold was passed: the incident is recorded (and mailed when due), and the
     restart command was run or held back by its cool-down
With --every the command runs until SIGTERM/SIGINT (exit 0); a failing round is logged
and the next one runs as usual.

cron, every 5 minutes:
  */5 * * * *  root  mailguard qmail-watch 2>&1 | logger -t qmail-watch
"""


def register(sub: Any) -> None:
    from mailguard.cli.main import add_common  # noqa: PLC0415

    p = sub.add_parser(
        "qmail-watch", help="read qmail's queue, store the reading, alert and restart",
        description="Read qmail's queue (as qmail-qstat / qmail-qread), store the reading, "
        "alert the admin past the [qmail_watch] thresholds and run its restart command "
        "at most once per cool-down.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--every", type=float, metavar="SECONDS",
                   help="keep running, one reading every SECONDS (for daemontools/systemd)")
    p.add_argument("--queue-dir", metavar="DIR",
                   help="qmail's queue directory (default: [qmail_watch] queue_dir)")
    p.set_defaults(func=_cmd)


@dataclass(frozen=True, slots=True)
class WatchOutcome:
    """What one round saw and did."""

    reading: QueueReading
    over: list[Exceeded]
    restart: str  # "" (none wanted), "ran exit=N", "timed out", "cannot run: …", "cool-down"
    alert_mailed: bool
    purged: int


async def run_command(argv: tuple[str, ...], timeout_s: float) -> tuple[int | None, str]:
    """Run `argv` (no shell); its exit status (None: killed after `timeout_s`) and the
    start of its output."""
    import asyncio  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None, ""
    return proc.returncode, out[:500].decode("utf-8", "replace").strip()


async def watch_once(config: Config, *, db: Database, clock: Clock, delivery: Delivery,
                     host: str, queue_dir: str | None = None) -> WatchOutcome:
    """One round: read, store, purge, decide, restart, alert. Raises QueueUnreadable
    (an OSError) or TemporaryError (the store)."""
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415
    import shlex  # noqa: PLC0415

    from mailguard.notify.incidents import Alerter  # noqa: PLC0415
    from mailguard.qmail.queue_watch import exceeded, read_queue, wants_restart  # noqa: PLC0415
    from mailguard.store.alerts import AlertStore  # noqa: PLC0415
    from mailguard.store.queue_readings import (  # noqa: PLC0415
        QueueReadingRecord,
        QueueReadingStore,
    )

    log = logging.getLogger("mailguard.qmail_watch")
    cfg = config.qmail_watch
    directory = queue_dir or cfg.queue_dir
    now = clock.now()
    reading = await asyncio.to_thread(read_queue, directory, now)
    purged = await QueueReadingStore(db).add(
        QueueReadingRecord(host, now, reading.messages, reading.unprocessed, reading.local,
                           reading.remote, reading.oldest_age_s),
        purge_before=now - cfg.keep_readings_h * 3600)
    over = exceeded(reading, cfg)
    alerts = AlertStore(db)
    alerter = Alerter(config.alerts, alerts, delivery, clock=clock, hostname=host)
    queue_key, restart_key = f"qmail-queue:{host}", f"qmail-restart:{host}"
    restart = ""
    command = shlex.join(cfg.restart_command)
    if wants_restart(over, cfg):
        claim = await alerts.touch(
            restart_key, "qmail_restart", f"qmail restart: {command}", host=host, now=now,
            remind_s=cfg.restart_cooldown_s, across_incidents=True)
        if not claim.due:
            restart = "cool-down"
            log.warning("event=qmail_restart result=cool-down command=%r last=%s", command,
                        claim.alert.last_sent_ts)
        else:
            try:
                code, output = await run_command(cfg.restart_command, cfg.restart_timeout_s)
                restart = f"ran exit={code}" if code is not None else "timed out"
            except OSError as exc:
                restart, output = f"cannot run: {exc.strerror or exc}", ""
            # a failed restart keeps its claim: no hammering before the cool-down ends
            log.warning("event=qmail_restart result=%r command=%r output=%r", restart,
                        command, output)
    mailed = False
    if over:
        summary = f"qmail queue on {host}: " + ", ".join(e.describe() for e in over)
        details = [f"Queue: {directory}", "", *reading.qstat().splitlines(), ""]
        details += [f"Threshold passed: {e.describe()}" for e in over]
        if restart:
            held = ("held back: it ran less than restart_cooldown_s "
                    f"({cfg.restart_cooldown_s}s) ago")
            details.append(f"Restart command: {command}: "
                           + (held if restart == "cool-down" else restart))
        details += ["", "qmail-qstat and qmail-qread show the same queue;",
                    "the readings of the last 24 hours are in the store."]
        mailed = (await alerter.raise_alert(queue_key, "qmail_queue", summary,
                                            details)).mailed
    else:
        await alerter.resolve(queue_key, [f"Queue: {directory}", "",
                                          *reading.qstat().splitlines()])
        await alerts.resolve(restart_key, now=now)
    log.log(logging.WARNING if over else logging.INFO,
            "event=qmail_watch host=%s messages=%d unprocessed=%d local=%d remote=%d "
            "bounces=%d oldest_age_s=%d unprocessed_age_s=%d exceeded=%r restart=%r "
            "alert_mailed=%s purged=%d", host, reading.messages, reading.unprocessed,
            reading.local, reading.remote, reading.bounces, reading.oldest_age_s,
            reading.unprocessed_oldest_age_s, ",".join(e.threshold for e in over), restart,
            "yes" if mailed else "no", purged)
    return WatchOutcome(reading, over, restart, mailed, purged)


def _cmd(args: argparse.Namespace) -> int:
    from mailguard.cli.main import EXIT_FAILURE, EXIT_USAGE, load_config  # noqa: PLC0415
    from mailguard.cli.store_command import run_with_store  # noqa: PLC0415

    config = load_config(args)
    if args.every is not None and args.every <= 0:
        print("mailguard: --every must be > 0", file=sys.stderr)
        return EXIT_USAGE

    async def act(db: Database) -> int:
        import asyncio  # noqa: PLC0415
        import logging  # noqa: PLC0415
        import signal  # noqa: PLC0415
        import socket  # noqa: PLC0415

        from mailguard.clock import SystemClock  # noqa: PLC0415
        from mailguard.delivery.methods import build_delivery  # noqa: PLC0415
        from mailguard.errors import MailguardError  # noqa: PLC0415
        from mailguard.logsetup import setup_logging  # noqa: PLC0415

        setup_logging(config.log.level, config.log.format)
        clock = SystemClock()
        delivery = build_delivery(config, clock)
        host = config.server.hostname or socket.gethostname()

        async def once() -> WatchOutcome:
            return await watch_once(config, db=db, clock=clock, delivery=delivery, host=host,
                                    queue_dir=args.queue_dir)

        if args.every is None:
            try:
                outcome = await once()
            except OSError as exc:  # the queue directory (QueueUnreadable)
                print(f"mailguard: {exc}", file=sys.stderr)
                return EXIT_FAILURE
            return EXIT_THRESHOLD if outcome.over else 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log = logging.getLogger("mailguard.qmail_watch")
        while not stop.is_set():
            try:
                await once()
            except (OSError, MailguardError) as exc:  # logged; the next round may succeed
                log.error("event=qmail_watch_failed error=%r", str(exc))
            try:
                async with asyncio.timeout(args.every):
                    await stop.wait()
            except TimeoutError:
                pass
        return 0

    return run_with_store(config.store.url, act)
