"""Build queue directories laid out exactly as qmail's (qmail-1.03 `install`, qmail-queue.c,
qmail-send.c) for the queue watch's tests.

A message is named by the inode number of its file; the split subdirectory is that
number modulo conf-split (23 by default). `add` goes through qmail-queue's steps: a file
in pid/, linked to mess/<split>/<inode>, the envelope written to intd/<inode> and linked
to todo/<inode>; `preprocess` does qmail-send's part: info/<split>/<inode> (the sender),
local/ and remote/ (the recipients still to deliver), then todo/ and intd/ go."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SPLIT = 23  # conf-split


def make_queue(root: Path, split: int = SPLIT) -> Path:
    """An empty queue under `root`: qmail's directories, split ones with 0..split-1."""
    for name in ("mess", "info", "local", "remote"):
        for n in range(split):
            (root / name / str(n)).mkdir(parents=True, exist_ok=True)
    for name in ("todo", "intd", "bounce", "pid", "lock"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "lock" / "sendmutex").touch()
    return root


@dataclass(frozen=True)
class Queued:
    root: Path
    inode: int
    split: int

    def path(self, top: str) -> Path:
        if top in ("mess", "info", "local", "remote"):
            return self.root / top / str(self.inode % self.split) / str(self.inode)
        return self.root / top / str(self.inode)


def add(root: Path, *, sender: str = "a@example.org", rcpts: tuple[str, ...] = ("u@x.test",),
        mtime: float | None = None, split: int = SPLIT) -> Queued:
    """Queue one message as qmail-queue does (not yet preprocessed: it is in todo/)."""
    tmp = root / "pid" / f"{os.getpid()}.{len(os.listdir(root / 'pid'))}"
    tmp.write_bytes(b"Received: (qmail 1 invoked by uid 0); 1 Jan 2027 00:00:00 -0000\n\nhi\n")
    q = Queued(root, tmp.stat().st_ino, split)
    os.link(tmp, q.path("mess"))
    tmp.unlink()
    env = f"u0\0p0\0F{sender}\0" + "".join(f"T{r}\0" for r in rcpts) + "\0"
    q.path("intd").write_bytes(env.encode())
    os.link(q.path("intd"), q.path("todo"))
    if mtime is not None:
        for top in ("mess", "todo"):
            os.utime(q.path(top), (mtime, mtime))
    return q


def preprocess(q: Queued, *, local: bool = False, remote: bool = True) -> None:
    """qmail-send's preprocessing of `q`: info/, local/ and/or remote/, then no todo/."""
    q.path("info").write_bytes(b"Fa@example.org\0")
    if local:
        q.path("local").write_bytes(b"Tu@here.test\0")
    if remote:
        q.path("remote").write_bytes(b"Tu@x.test\0")
    q.path("todo").unlink()
    q.path("intd").unlink()


def deliver(q: Queued) -> None:
    """qmail-send is done with `q`: every file of it goes."""
    for top in ("mess", "info", "local", "remote", "todo", "intd"):
        q.path(top).unlink(missing_ok=True)
