"""The qmail queue watch, one round at a time on a frozen clock: readings stored and
purged after 24 h, one alert mail per incident (reminders, a note when it is over), the
restart command (a real script) at most once per cool-down, remembered in the store.
Then AlertStore's claim under concurrency, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import stat
from email import message_from_bytes
from pathlib import Path

from mailguard.cli.qmail_watch import watch_once
from mailguard.clock import FrozenClock
from mailguard.config import Config, load
from mailguard.delivery.maildir import MaildirDelivery, MaildirSpool
from mailguard.store.alerts import AlertStore
from mailguard.store.queue_readings import QueueReadingStore
from mailguard.store.repo import Store
from tests.qmail_queue_layout import add, deliver, make_queue, preprocess

HOST = "mx1.test"


def config(queue: Path, script: Path) -> Config:
    return load(None, {
        "server": {"hostname": HOST},
        "alerts": {"to": "admin@example.com", "remind_s": 3600},
        "qmail_watch": {"queue_dir": str(queue), "max_unprocessed": 2,
                        "max_unprocessed_age_s": 600, "max_messages": 100,
                        "restart_command": [str(script), "-t", "/service/qmail-send"],
                        "restart_cooldown_s": 1800},
    })


def restart_script(tmp: Path) -> tuple[Path, Path]:
    """A stand-in for svc: appends its arguments to a file, one line per run."""
    record = tmp / "restarts.log"
    script = tmp / "svc"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\necho restarted\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, record


def mails(spool: Path) -> list[bytes]:
    new = spool / "example.com" / "admin" / "new"
    return [p.read_bytes() for p in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns)] \
        if new.exists() else []


def restarts(record: Path) -> int:
    return len(record.read_text().splitlines()) if record.exists() else 0


async def test_stall_alert_restart_cool_down_resolve(store: Store, tmp_path: Path) -> None:
    clock = FrozenClock()
    queue = make_queue(tmp_path / "queue")
    script, record = restart_script(tmp_path)
    cfg = config(queue, script)
    spool = tmp_path / "spool"
    delivery = MaildirDelivery(MaildirSpool(spool, clock), clock)

    async def round_() -> tuple[int, str, bool]:
        out = await watch_once(cfg, db=store.db, clock=clock, delivery=delivery, host=HOST)
        return len(out.over), out.restart, out.alert_mailed

    # healthy: one preprocessed remote message, nothing raised, a reading stored
    ok = add(queue, mtime=clock.now() - 60)
    preprocess(ok)
    assert await round_() == (0, "", False)
    # qmail-send stops preprocessing: todo/ grows and ages
    stuck = [add(queue, mtime=clock.now() - 700) for _ in range(3)]
    over, restart, mailed = await round_()
    assert (over, restart, mailed) == (2, "ran exit=0", True)
    assert restarts(record) == 1
    assert record.read_text() == "-t /service/qmail-send\n"
    [first] = mails(spool)
    msg = message_from_bytes(first)
    assert msg["Subject"].startswith(f"[mailguard] qmail queue on {HOST}: max_unprocessed 3 > 2")
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Mailguard-Alert"] == f"qmail_queue key=qmail-queue:{HOST}"
    text = msg.get_payload()
    assert isinstance(text, str)
    assert "messages in queue but not yet preprocessed: 3" in text
    assert "-t /service/qmail-send: ran exit=0" in text
    # still stalled a minute later: no second restart, no second mail
    clock.advance(60)
    assert await round_() == (2, "cool-down", False)
    assert restarts(record) == 1 and len(mails(spool)) == 1
    # past the cool-down: one more restart; past the reminder interval: a reminder
    clock.advance(1800)
    assert (await round_())[1:] == ("ran exit=0", False)
    clock.advance(3600)
    assert (await round_())[1:] == ("ran exit=0", True)
    assert restarts(record) == 3
    reminder = message_from_bytes(mails(spool)[-1])
    assert reminder["Subject"].startswith("[mailguard] reminder: qmail queue on")
    # qmail-send catches up: the incident is over, the admin is told once
    for q in stuck:
        preprocess(q)
    assert await round_() == (0, "", False)
    assert await round_() == (0, "", False)
    assert len(mails(spool)) == 3
    assert message_from_bytes(mails(spool)[-1])["Subject"].startswith("[mailguard] resolved:")
    alerts = AlertStore(store.db)
    assert await alerts.list_open() == []
    recent = await alerts.list_recent(0)
    queue_incident = next(a for a in recent if a.kind == "qmail_queue")
    assert queue_incident.sent == 2 and queue_incident.resolved_ts == clock.now()
    # it stalls again soon after: a new incident (mailed), but the restart's cool-down
    # holds across incidents (the last restart was minutes ago)
    clock.advance(120)
    again = [add(queue, mtime=clock.now() - 700) for _ in range(3)]
    assert await round_() == (2, "cool-down", True)
    assert restarts(record) == 1 + 2
    assert len(await alerts.list_open()) == 2  # the queue incident and the restart's
    for q in (*again, ok, *stuck):
        deliver(q)


async def test_readings_are_kept_24_hours(store: Store, tmp_path: Path) -> None:
    clock = FrozenClock()
    queue = make_queue(tmp_path / "queue")
    script, _ = restart_script(tmp_path)
    cfg = config(queue, script)
    delivery = MaildirDelivery(MaildirSpool(tmp_path / "spool", clock), clock)
    readings = QueueReadingStore(store.db)
    start = clock.now()
    for _ in range(4):  # one reading every 10 hours
        await watch_once(cfg, db=store.db, clock=clock, delivery=delivery, host=HOST)
        clock.advance(36000)
    kept = await readings.since(0)
    assert [r.ts - start for r in kept] == [36000, 72000, 108000]  # the first is > 24 h old
    assert all(r.host == HOST and r.messages == 0 for r in kept)


async def test_restart_that_cannot_run_is_logged_and_still_cools_down(
    store: Store, tmp_path: Path
) -> None:
    clock = FrozenClock()
    queue = make_queue(tmp_path / "queue")
    cfg = config(queue, tmp_path / "no-such-svc")
    delivery = MaildirDelivery(MaildirSpool(tmp_path / "spool", clock), clock)
    for _ in range(3):
        add(queue, mtime=clock.now() - 700)
    out = await watch_once(cfg, db=store.db, clock=clock, delivery=delivery, host=HOST)
    assert out.restart.startswith("cannot run:")
    out = await watch_once(cfg, db=store.db, clock=clock, delivery=delivery, host=HOST)
    assert out.restart == "cool-down"


async def test_one_claim_among_concurrent_sightings(store: Store, db_url: str) -> None:
    """Two Store objects (two processes' engines) see one incident at the same moment:
    exactly one of them is to mail it, and there is one open incident."""
    other = await Store.open(db_url)
    try:
        a, b = AlertStore(store.db), AlertStore(other.db)
        touched = await asyncio.gather(*(
            s.touch("scanner:clamd", "scanner", "clamd unreachable", host=h,
                    now=1000.0, remind_s=600)
            for s, h in ((a, "mx1"), (b, "mx2"), (a, "mx1"), (b, "mx2"))))
        assert sum(t.due for t in touched) == 1
        assert sum(t.new for t in touched) == 1
        [incident] = await a.list_open()
        assert incident.sent == 1 and incident.last_sent_ts == 1000.0
        # not due again before remind_s; a failed mail gives its claim back
        assert not (await b.touch("scanner:clamd", "scanner", "x", host="mx2", now=1500.0,
                                  remind_s=600)).due
        due = await b.touch("scanner:clamd", "scanner", "x", host="mx2", now=1600.0,
                            remind_s=600)
        assert due.due and due.alert.sent == 2
        await b.unclaim(due)
        again = await a.touch("scanner:clamd", "scanner", "x", host="mx1", now=1601.0,
                              remind_s=600)
        assert again.due and again.alert.sent == 2
        assert [r.key for r in await a.resolve("scanner:clamd", now=1700.0)] == ["scanner:clamd"]
        assert await a.resolve("scanner:clamd", now=1701.0) == []
        assert await a.get_open("scanner:clamd") is None
    finally:
        await other.close()
