"""Reading qmail's queue the way `qmail-qstat` and `qmail-qread` do, and holding a reading
against `[qmail_watch]`'s thresholds. Pure file reading and decisions: no store, no mail
(`mailguard qmail-watch` does those). Standard library only.

The queue (qmail-1.03 INSTALL, qmail-queue(8), qmail-send(8)), under /var/qmail/queue:

- `mess/<split>/<inode>`: every message in the queue; `<split>` is the inode number
  modulo conf-split (23 by default). qmail-qstat's "messages in queue" counts these.
- `todo/<inode>` (some patches split it too): messages queued but not yet preprocessed
  by qmail-send: "messages in queue but not yet preprocessed". A growing todo/ means
  qmail-send is not picking mail up.
- `info/<split>/<inode>`: the envelope sender of a preprocessed message;
  `local/<split>/<inode>` and `remote/<split>/<inode>`: its recipients still to be
  delivered locally / remotely (qmail-qread's "local" and "remote" lines); a message
  with both kinds of recipients is in both.
- `intd/<inode>`: an envelope being written by qmail-queue; `bounce/<inode>`: bounces
  qmail-send still has to send; `pid/`, `lock/`: qmail's own.

Files may vanish while they are read (qmail-send finishing a delivery): that is normal,
not an error. The age of a message is that of its `mess` file's mtime (what qmail-qread
prints); the age of the todo/ backlog that of the oldest todo file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mailguard.settings.qmail_watch import THRESHOLDS, QmailWatchConfig


class QueueUnreadable(OSError):
    """The queue directory (or its mess/) cannot be read: wrong path or permissions."""


@dataclass(frozen=True, slots=True)
class QueueReading:
    """One look at the queue."""

    messages: int  # files under mess/
    unprocessed: int  # files under todo/
    local: int  # messages with local recipients left (local/)
    remote: int  # messages with remote recipients left (remote/)
    bounces: int  # bounces waiting (bounce/)
    oldest_age_s: float  # age of the oldest message (0: empty queue)
    unprocessed_oldest_age_s: float  # age of the oldest todo/ entry (0: none)

    def qstat(self) -> str:
        """qmail-qstat's two lines, plus the split and the ages."""
        return (f"messages in queue: {self.messages}\n"
                f"messages in queue but not yet preprocessed: {self.unprocessed}\n"
                f"local: {self.local}, remote: {self.remote}, bounces: {self.bounces}\n"
                f"oldest message: {_age(self.oldest_age_s)}, "
                f"oldest not preprocessed: {_age(self.unprocessed_oldest_age_s)}")


@dataclass(frozen=True, slots=True)
class Exceeded:
    """A threshold of `[qmail_watch]` that a reading passes."""

    threshold: str  # the key, e.g. "max_unprocessed"
    value: float
    limit: int

    def describe(self) -> str:
        if self.threshold.endswith("_s"):
            return f"{self.threshold} {_age(self.value)} > {_age(self.limit)}"
        return f"{self.threshold} {int(self.value)} > {self.limit}"


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def _files(top: Path) -> list[os.stat_result]:
    """stat of every regular file under `top` (any depth); [] when `top` is missing."""
    out: list[os.stat_result] = []
    try:
        entries = list(os.scandir(top))
    except FileNotFoundError:
        return out
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                out.extend(_files(Path(entry.path)))
            elif entry.is_file(follow_symlinks=False):
                out.append(entry.stat(follow_symlinks=False))
        except FileNotFoundError:  # delivered and removed while we looked
            continue
    return out


def read_queue(queue_dir: str | Path, now: float) -> QueueReading:
    """Count the queue under `queue_dir` at time `now` (epoch seconds, the caller's
    clock). Raises QueueUnreadable when mess/ is missing or not readable."""
    root = Path(queue_dir)
    mess = root / "mess"
    try:
        os.scandir(mess).close()
    except OSError as exc:
        raise QueueUnreadable(f"cannot read the qmail queue {mess}: "
                              f"{exc.strerror or exc}") from None
    messages = _files(mess)
    todo = _files(root / "todo")

    def oldest(stats: list[os.stat_result]) -> float:
        return max(0.0, now - min(s.st_mtime for s in stats)) if stats else 0.0

    return QueueReading(
        messages=len(messages),
        unprocessed=len(todo),
        local=len(_files(root / "local")),
        remote=len(_files(root / "remote")),
        bounces=len(_files(root / "bounce")),
        oldest_age_s=oldest(messages),
        unprocessed_oldest_age_s=oldest(todo),
    )


def exceeded(reading: QueueReading, cfg: QmailWatchConfig) -> list[Exceeded]:
    """The thresholds `reading` passes (a threshold of 0 is off)."""
    values = {
        "max_messages": reading.messages,
        "max_unprocessed": reading.unprocessed,
        "max_oldest_age_s": reading.oldest_age_s,
        "max_unprocessed_age_s": reading.unprocessed_oldest_age_s,
    }
    assert set(values) == set(THRESHOLDS)
    out: list[Exceeded] = []
    for name in THRESHOLDS:
        limit = int(getattr(cfg, name))
        if limit and values[name] > limit:
            out.append(Exceeded(name, values[name], limit))
    return out


def wants_restart(over: list[Exceeded], cfg: QmailWatchConfig) -> bool:
    """Whether the passed thresholds call for the restart command."""
    return bool(cfg.restart_command) and any(e.threshold in cfg.restart_on for e in over)
