"""Reading a queue laid out as qmail's, and holding readings against the thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailguard.qmail.queue_watch import (
    QueueReading,
    QueueUnreadable,
    exceeded,
    read_queue,
    wants_restart,
)
from mailguard.settings.qmail_watch import QmailWatchConfig
from tests.qmail_queue_layout import add, deliver, make_queue, preprocess

NOW = 1_800_000_000.0


def test_empty_queue(tmp_path: Path) -> None:
    root = make_queue(tmp_path / "queue")
    assert read_queue(root, NOW) == QueueReading(0, 0, 0, 0, 0, 0.0, 0.0)


def test_counts_as_qmail_qstat_and_qmail_qread(tmp_path: Path) -> None:
    root = make_queue(tmp_path / "queue")
    remote = add(root, mtime=NOW - 7200)
    preprocess(remote, remote=True)
    both = add(root, mtime=NOW - 600)
    preprocess(both, local=True, remote=True)
    local = add(root, mtime=NOW - 60)
    preprocess(local, local=True, remote=False)
    waiting = [add(root, mtime=NOW - 300), add(root, mtime=NOW - 30)]  # still in todo/
    (root / "bounce" / str(remote.inode)).write_bytes(b"")
    # messages sit in split subdirectories named by inode mod 23
    assert remote.path("mess").parent.name == str(remote.inode % 23)
    r = read_queue(root, NOW)
    assert (r.messages, r.unprocessed, r.local, r.remote, r.bounces) == (5, 2, 2, 2, 1)
    assert r.oldest_age_s == pytest.approx(7200)
    assert r.unprocessed_oldest_age_s == pytest.approx(300)
    assert "messages in queue: 5\nmessages in queue but not yet preprocessed: 2" in r.qstat()
    for q in (remote, *waiting):
        deliver(q)
    r = read_queue(root, NOW)
    assert (r.messages, r.unprocessed, r.local, r.remote) == (2, 0, 2, 1)
    assert r.unprocessed_oldest_age_s == 0.0
    assert r.oldest_age_s == pytest.approx(600)


def test_big_todo_split_and_a_clock_behind_the_files(tmp_path: Path) -> None:
    root = make_queue(tmp_path / "queue")
    q = add(root, mtime=NOW + 50)  # a file from the future counts as age 0
    (root / "todo" / "5").mkdir()  # big-todo / ext_todo patches split todo/ too
    q.path("todo").rename(root / "todo" / "5" / str(q.inode))
    r = read_queue(root, NOW)
    assert (r.messages, r.unprocessed, r.oldest_age_s) == (1, 1, 0.0)


def test_unreadable_queue(tmp_path: Path) -> None:
    with pytest.raises(QueueUnreadable, match="cannot read the qmail queue"):
        read_queue(tmp_path / "nothing", NOW)


CFG = QmailWatchConfig(max_messages=100, max_unprocessed=10, max_oldest_age_s=86400,
                       max_unprocessed_age_s=900,
                       restart_command=("svc", "-t", "/service/qmail-send"))


@pytest.mark.parametrize(
    ("reading", "passed", "restart"),
    [
        (QueueReading(100, 10, 50, 50, 0, 86400, 900), [], False),  # at the limits: fine
        (QueueReading(101, 0, 0, 101, 0, 10, 0), ["max_messages"], False),  # remote backlog
        (QueueReading(5, 11, 0, 0, 0, 10, 10), ["max_unprocessed"], True),
        (QueueReading(5, 1, 0, 0, 0, 10, 901), ["max_unprocessed_age_s"], True),  # stalled
        (QueueReading(500, 50, 0, 450, 0, 90000, 1000),
         ["max_messages", "max_unprocessed", "max_oldest_age_s", "max_unprocessed_age_s"],
         True),
    ],
)
def test_thresholds(reading: QueueReading, passed: list[str], restart: bool) -> None:
    over = exceeded(reading, CFG)
    assert [e.threshold for e in over] == passed
    assert wants_restart(over, CFG) is restart


def test_zero_turns_a_threshold_off_and_no_command_no_restart() -> None:
    cfg = QmailWatchConfig(max_messages=0, max_unprocessed=0, max_unprocessed_age_s=0)
    busy = QueueReading(10**6, 10**5, 0, 0, 0, 10**7, 10**6)
    assert exceeded(busy, cfg) == []
    over = exceeded(busy, QmailWatchConfig())
    assert [e.threshold for e in over] == ["max_messages", "max_unprocessed",
                                           "max_unprocessed_age_s"]
    assert not wants_restart(over, QmailWatchConfig())  # no restart_command
    assert over[2].describe() == "max_unprocessed_age_s 11d13h > 15m"
