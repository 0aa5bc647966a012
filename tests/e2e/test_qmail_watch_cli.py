"""`mailguard qmail-watch` as cron and daemontools run it: a real process on a queue laid
out as qmail's, a real restart script, the alert mail through the configured delivery
(a Maildir spool here), and the exit status the help text promises."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import stat
import subprocess
import time
from email import message_from_bytes
from pathlib import Path

from tests.e2e.daemon_harness import mailguard_cmd, run_cli, upgrade_store
from tests.qmail_queue_layout import add, deliver, make_queue, preprocess

CONFIG = """
[server]
hostname = "mx.test"

[delivery]
method = "maildir"
spool = "{tmp}/spool"

[store]
url = "sqlite+aiosqlite:///{tmp}/mailguard.db"

[alerts]
to = "admin@example.com"
sender = "mailguard@mx.test"

[qmail_watch]
queue_dir = "{tmp}/queue"
max_unprocessed = 2
max_unprocessed_age_s = 600
restart_command = ["{tmp}/svc", "-t", "/service/qmail-send"]
restart_cooldown_s = 600
"""


def setup(tmp: Path) -> tuple[Path, Path, Path]:
    conf = tmp / "mailguard.toml"
    conf.write_text(CONFIG.replace("{tmp}", str(tmp)))
    upgrade_store(f"sqlite+aiosqlite:///{tmp}/mailguard.db")
    script = tmp / "svc"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp}/restarts.log\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return conf, make_queue(tmp / "queue"), tmp / "restarts.log"


def alerts(tmp: Path) -> list[bytes]:
    new = tmp / "spool" / "example.com" / "admin" / "new"
    if not new.exists():
        return []
    return [p.read_bytes() for p in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns)]


def test_one_shot_exit_status_alert_once_restart_once(tmp_path: Path) -> None:
    conf, queue, restarts = setup(tmp_path)
    fine = run_cli("qmail-watch", "--config", str(conf))
    assert fine.returncode == 0, fine.stderr
    assert "event=qmail_watch host=mx.test messages=0 unprocessed=0" in fine.stderr
    stuck = [add(queue, mtime=time.time() - 900) for _ in range(3)]
    first = run_cli("qmail-watch", "--config", str(conf))
    assert first.returncode == 3, first.stderr
    assert "event=qmail_restart result='ran exit=0'" in first.stderr
    assert "alert_mailed=yes" in first.stderr
    assert restarts.read_text() == "-t /service/qmail-send\n"
    [mail] = alerts(tmp_path)
    msg = message_from_bytes(mail)
    assert msg["To"] == "admin@example.com" and msg["From"] == "mailguard@mx.test"
    assert "max_unprocessed 3 > 2" in msg["Subject"]
    # cron runs it again five minutes later (here: at once): remembered in the store
    second = run_cli("qmail-watch", "--config", str(conf))
    assert second.returncode == 3
    assert "event=qmail_restart result=cool-down" in second.stderr
    assert "alert_mailed=no" in second.stderr
    assert restarts.read_text().count("\n") == 1 and len(alerts(tmp_path)) == 1
    for q in stuck:
        preprocess(q)
    over = run_cli("qmail-watch", "--config", str(conf))
    assert over.returncode == 0
    assert len(alerts(tmp_path)) == 2
    assert message_from_bytes(alerts(tmp_path)[-1])["Subject"].startswith(
        "[mailguard] resolved: qmail queue on mx.test")
    for q in stuck:
        deliver(q)


def test_unreadable_queue_and_bad_settings(tmp_path: Path) -> None:
    conf, _, _ = setup(tmp_path)
    res = run_cli("qmail-watch", "--config", str(conf), "--queue-dir", str(tmp_path / "none"))
    assert res.returncode == 1
    assert "cannot read the qmail queue" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.replace("{tmp}", str(tmp_path))
                   .replace("restart_cooldown_s = 600", 'restart_on = ["max_nonsense"]'))
    res = run_cli("qmail-watch", "--config", str(bad))
    assert res.returncode == 2
    assert "qmail_watch.restart_on" in res.stderr
    assert run_cli("qmail-watch", "--config", str(conf), "--every", "0").returncode == 2


def test_every_keeps_reading_until_sigterm(tmp_path: Path) -> None:
    conf, queue, _ = setup(tmp_path)
    q = add(queue)
    preprocess(q, local=True, remote=False)
    proc = subprocess.Popen(mailguard_cmd("qmail-watch", "--config", str(conf), "--every",
                                          "0.2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        db = tmp_path / "mailguard.db"
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if readings(db) >= 3:
                break
        assert readings(db) >= 3
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "messages=1 unprocessed=0 local=1 remote=0" in err


def readings(db: Path) -> int:
    """Readings stored so far (read beside the running watch; SQLite in WAL mode)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM qmail_queue_reading").fetchone()[0])
