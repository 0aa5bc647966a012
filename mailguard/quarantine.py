"""mailguard's quarantine: a copy per recipient kept instead of delivered, listed by the
web page and the CLI, released through the plain delivery, purged after `days`.

A copy is a file (written to `tmp/`, fsynced, renamed into `YYYY-MM-DD/`, its directory
fsynced) plus a row (store.quarantine); the QUEUE stage answers 250 only after both
exist, so an accepted message is never lost between them. A release claims the row
first (`held` → `releasing`), then delivers, then marks it `released` and removes the
file: a second click finds nothing to release. A delivery that fails puts the row back
to `held` (the user may try again)."""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailguard.body import Body, Message, as_body
from mailguard.clock import Clock
from mailguard.delivery.base import Delivered, Delivery
from mailguard.errors import TemporaryError
from mailguard.headers import header_line
from mailguard.notify.mime import rfc5322_date
from mailguard.settings.quarantine import QuarantineConfig
from mailguard.store.database import Database
from mailguard.store.quarantine import (
    DELETED,
    HELD,
    RELEASED,
    RELEASING,
    Entry,
    NewEntry,
    QuarantineStore,
    Scope,
)

log = logging.getLogger("mailguard.quarantine")

DONE_KEPT_S = 7 * 86400  # released/deleted rows stay listed (history) this long
PURGE_EVERY_S = 3600.0  # a process that keeps copies purges expired ones this often
RELEASED_HEADER = "X-MailGuard-Released"
MAX_FIELD = 500  # characters of Subject/From kept in the row


@dataclass(frozen=True, slots=True)
class Released:
    """What a release did: `delivered` is the hand-over's outcome (None when there was
    nothing to release: not found, not yours, or released already)."""

    entry: Entry | None
    delivered: Delivered | None

    @property
    def ok(self) -> bool:
        return self.delivered is not None and self.delivered.accepted


def summary_fields(message: bytes) -> tuple[str, str]:
    """(From, Subject) decoded for display; a broken header shows as its raw text."""
    head = message.split(b"\n\n", 1)[0]
    try:
        msg = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head)
        sender = str(msg.get("from", "") or "")
        subject = str(msg.get("subject", "") or "")
    except Exception:  # malformed headers: the raw value is still worth showing
        raw = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
        sender = str(raw.get("from", "") or "")
        subject = str(raw.get("subject", "") or "")
    return _clean(sender), _clean(subject)


def _clean(text: str) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:MAX_FIELD]


class QuarantineService:
    """Files under `[quarantine] directory` plus rows in the store."""

    def __init__(self, cfg: QuarantineConfig, db: Database, clock: Clock) -> None:
        self.cfg = cfg
        self.store = QuarantineStore(db)
        self._clock = clock
        self._dir = Path(cfg.directory)
        self._last_purge: float | None = None
        self._purge_task: asyncio.Task[int] | None = None

    # --- keeping --------------------------------------------------------------------------

    async def keep(self, rcpts: Sequence[str], mail_from: str, message: Message, *,
                   kind: str, scores: Sequence[float | None] = (),
                   reasons: Sequence[str] = ()) -> list[int]:
        """One file and one row per recipient; raises TemporaryError (nothing kept).
        A spooled message is copied from its file a piece at a time."""
        message = as_body(message)
        sender_hdr, subject = summary_fields(message.header_block())
        now = self._clock.now()
        paths: list[str] = []
        try:
            for _ in rcpts:
                paths.append(await asyncio.to_thread(self._write, message, now))
            entries = [NewEntry(r, mail_from, sender_hdr, subject,
                                scores[i] if i < len(scores) else None, message.size, kind,
                                reasons[i] if i < len(reasons) else "", paths[i])
                       for i, r in enumerate(rcpts)]
            ids = await self.store.add(entries, now, now + self.cfg.days * 86400)
        except BaseException:
            for p in paths:
                with contextlib.suppress(OSError):
                    (self._dir / p).unlink()
            raise
        self._purge_soon()
        return ids

    def _purge_soon(self) -> None:
        """Expiry without cron: at most hourly, in the background (never on the path of
        the message that triggered it). `mailguard quarantine purge` does the same."""
        mono = self._clock.monotonic()
        if self._purge_task is not None and not self._purge_task.done():
            return
        if self._last_purge is not None and mono - self._last_purge < PURGE_EVERY_S:
            return
        self._last_purge = mono
        self._purge_task = asyncio.get_running_loop().create_task(self._purge_logged())

    async def _purge_logged(self) -> int:
        try:
            n = await self.purge()
        except TemporaryError as exc:
            log.error("event=quarantine_purge_failed error=%r", str(exc))
            return 0
        if n:
            log.info("event=quarantine_purged entries=%d", n)
        return n

    def _write(self, message: Body, now: float) -> str:
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        name = f"{int(now)}.{secrets.token_hex(8)}"
        tmp_dir, day_dir = self._dir / "tmp", self._dir / day
        try:
            tmp_dir.mkdir(parents=True, exist_ok=True)
            day_dir.mkdir(exist_ok=True)
            tmp = tmp_dir / name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                for piece in message.chunks():
                    view = memoryview(piece)
                    while view:
                        view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, day_dir / name)
            _fsync_dir(day_dir)
        except OSError as exc:
            raise TemporaryError(f"quarantine: cannot write under {self._dir}: "
                                 f"{exc.strerror or exc}") from exc
        return f"{day}/{name}"

    # --- reading ----------------------------------------------------------------------------

    def read(self, entry: Entry) -> bytes:
        try:
            return (self._dir / entry.path).read_bytes()
        except OSError as exc:
            raise TemporaryError(f"quarantine: cannot read {entry.path}: "
                                 f"{exc.strerror or exc}") from exc

    # --- release, delete, purge -------------------------------------------------------------

    async def release(self, entry_id: int, scope: Scope, delivery: Delivery, *,
                      by: str, allow_virus: bool = False) -> Released:
        """Deliver the copy to its recipient through `delivery`, once."""
        now = self._clock.now()
        entry = await self.store.get(entry_id, scope)
        if entry is None or entry.status != HELD or (entry.kind == "virus" and not allow_virus):
            return Released(entry, None)
        entry = await self.store.claim(entry_id, scope, to=RELEASING, now=now, by=by)
        if entry is None:
            return Released(None, None)
        try:
            message = self.read(entry)
            stamp = header_line(RELEASED_HEADER, f"by {by or 'admin'}; {rfc5322_date(now)}")
            delivered = await delivery.deliver(entry.mail_from, [entry.rcpt],
                                               (stamp + "\n").encode() + message)
        except BaseException:
            await self.store.finish(entry_id, status=HELD, now=now, by="")
            raise
        if not delivered.accepted:
            await self.store.finish(entry_id, status=HELD, now=now, by="")
            log.warning("event=quarantine_release result=fail id=%d rcpt=%s reply=%r",
                        entry_id, entry.rcpt, str(delivered.reply))
            return Released(entry, delivered)
        await self.store.finish(entry_id, status=RELEASED, now=self._clock.now(), by=by,
                                queue_id=delivered.queue_id)
        self._unlink(entry)
        log.info("event=quarantine_release result=ok id=%d rcpt=%s by=%s queue_id=%s",
                 entry_id, entry.rcpt, by, delivered.queue_id)
        return Released(entry, delivered)

    async def delete(self, entry_id: int, scope: Scope, *, by: str) -> Entry | None:
        entry = await self.store.claim(entry_id, scope, to=DELETED, now=self._clock.now(),
                                       by=by)
        if entry is not None:
            self._unlink(entry)
            log.info("event=quarantine_delete id=%d rcpt=%s by=%s", entry_id, entry.rcpt, by)
        return entry

    async def purge(self, *, batch: int = 1000) -> int:
        """Remove expired held copies and old history rows; returns how many rows."""
        total = 0
        while True:
            now = self._clock.now()
            gone = await self.store.expired(now, keep_done_s=DONE_KEPT_S, limit=batch)
            if not gone:
                return total
            for e in gone:
                if e.status in (HELD, RELEASING):
                    self._unlink(e)
            total += await self.store.remove([e.id for e in gone])
            if len(gone) < batch:
                return total

    def _unlink(self, entry: Entry) -> None:
        with contextlib.suppress(FileNotFoundError):
            try:
                (self._dir / entry.path).unlink()
            except OSError as exc:
                log.error("event=quarantine_unlink_failed path=%s error=%r", entry.path,
                          exc.strerror or str(exc))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

