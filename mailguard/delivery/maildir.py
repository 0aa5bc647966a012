"""The embedded default delivery: one Maildir per recipient under a root directory.

Layout: `<root>/<domain>/<local part>/{tmp,new,cur}`, both names lower-cased and
encoded so that nothing from the network can leave the root (see `path_component`).
Delivery follows the Maildir protocol (https://cr.yp.to/proto/maildir.html, as
qmail-local's maildir.c does it): write to tmp/ under a unique name, fsync, hard-link
into new/, fsync new/.  The message is stored as given; the spool holds LF text like
qmail's Maildir delivery, so converting CRLF is the caller's job.

All-or-nothing across recipients: every tmp file is written and fsynced before the first
link into new/.  Any failure removes the tmp files and the links already made, then
raises TemporaryError, so the sender retries.  If even that clean-up fails the error says
so: the retry may then duplicate the message for some recipients, but mail is never lost
and success is never reported for a partial delivery.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailguard.body import Body, Message, as_body
from mailguard.clock import Clock
from mailguard.delivery.base import Delivered
from mailguard.errors import PermanentError, TemporaryError
from mailguard.qmail import replies
from mailguard.verdict import Reply

log = logging.getLogger("mailguard.delivery")

# Our own replies (qmail has none: its Maildir delivery happens after the queue and
# bounces). RFC 3463: 5.1.3 bad destination mailbox address syntax.
NO_DOMAIN = Reply(553, "sorry, that recipient address has no domain", "5.1.3")
NO_LOCAL_PART = Reply(553, "sorry, that recipient address has no local part", "5.1.3")
DOMAIN_TOO_LONG = Reply(553, "sorry, that recipient domain is too long for this server",
                        "5.1.3")
LOCAL_PART_TOO_LONG = Reply(553, "sorry, that mailbox name is too long for this server",
                            "5.1.3")

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_NAME_MAX = 255  # bytes in one path component on common filesystems
# Bytes kept as they are in a directory name; everything else becomes %XX.
_SAFE_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789.-_+=")


class Unnameable(PermanentError):
    """A recipient that has no valid Maildir name; `reply` is what RCPT answers."""

    def __init__(self, reason: str, reply: Reply) -> None:
        super().__init__(reason)
        self.reply = reply


def path_component(text: str, what: str) -> str:
    """Lower-case `text` and make it one safe directory name.

    Bytes outside [a-z0-9.-_+=] (including `/`, NUL and `%` itself) become `%XX`, and so
    does a leading `.` (no `.`, `..` or hidden names); the encoding is reversible, so two
    addresses never share a folder by accident.  Empty or over-long names are refused
    with Unnameable (a PermanentError): retrying would not help.
    """
    raw = text.lower().encode("utf-8", "surrogateescape")
    if not raw:
        raise Unnameable(f"maildir: empty {what}",
                         NO_DOMAIN if what == "domain" else NO_LOCAL_PART)
    name = "".join(
        chr(b) if b in _SAFE_BYTES and not (i == 0 and b == 0x2E) else f"%{b:02X}"
        for i, b in enumerate(raw)
    )
    if len(name) > _NAME_MAX:
        raise Unnameable(f"maildir: {what} too long ({len(raw)} bytes)",
                         DOMAIN_TOO_LONG if what == "domain" else LOCAL_PART_TOO_LONG)
    return name


def maildir_for(root: Path, rcpt: str) -> Path:
    """The Maildir of `rcpt` (which must have a domain: see relay.qualify)."""
    at = rcpt.rfind("@")
    if at < 0:
        raise Unnameable(f"maildir: recipient {rcpt!r} has no domain", NO_DOMAIN)
    domain = path_component(rcpt[at + 1 :], "domain")
    user = path_component(rcpt[:at], "local part")
    return root / domain / user


def _header_value(text: str) -> bytes:
    # Header injection guard: CR, LF, NUL and other controls would end or split the line.
    raw = text.encode("utf-8", "surrogateescape")
    return bytes(0x3F if b < 0x20 or b == 0x7F else b for b in raw)


def _maildir_host(hostname: str) -> str:
    # Maildir spec: '/' and ':' in the host name are written as \057 and \072.
    return hostname.replace("/", "\\057").replace(":", "\\072") or "localhost"


@dataclass(frozen=True, slots=True)
class _Job:
    rcpt: str
    maildir: Path
    name: str
    head: bytes  # Return-Path and Delivered-To; the message body is shared, not copied


class MaildirSpool:
    """Delivers each message into the Maildir of every recipient; returns a queue id.

    File names are `<sec>.M<usec>P<pid>Q<n>R<token>.<host>`: time from the injected
    clock, `n` a per-instance counter (unique for any number of deliveries per second),
    `token` random per instance (two spools in one process never clash).  Blocking file
    work runs in a worker thread.
    """

    def __init__(self, root: Path, clock: Clock, *, hostname: str | None = None) -> None:
        self._root = Path(root)
        self._clock = clock
        self._host = _maildir_host(hostname if hostname is not None else socket.gethostname())
        self._token = os.urandom(4).hex()
        self._counter = 0

    @property
    def root(self) -> Path:
        return self._root

    def _unique(self, now: float) -> str:
        # Called on the event loop only, so the counter needs no lock.
        self._counter += 1
        sec = int(now)
        usec = min(int((now - sec) * 1_000_000), 999_999)
        return f"{sec}.M{usec}P{os.getpid()}Q{self._counter}R{self._token}"

    async def deliver(self, message: Message, sender: str, rcpts: Sequence[str]) -> str:
        """Store `message` for every recipient; return only once all copies are in new/
        and on disk.  Raises PermanentError for a recipient that has no valid Maildir
        name (before anything is written) and TemporaryError for disk trouble."""
        if not rcpts:
            raise PermanentError("maildir: no recipients")
        now = self._clock.now()
        return_path = b"Return-Path: <" + _header_value(sender) + b">\n"
        jobs: list[_Job] = []
        for rcpt in rcpts:
            maildir = maildir_for(self._root, rcpt)
            head = return_path + b"Delivered-To: " + _header_value(rcpt) + b"\n"
            name = f"{self._unique(now)}.{self._host}"
            jobs.append(_Job(rcpt, maildir, name, head))
        await asyncio.to_thread(self._deliver_all, jobs, as_body(message))
        return jobs[0].name.removesuffix(f".{self._host}")

    def _deliver_all(self, jobs: list[_Job], message: Body) -> None:
        tmp_files: list[Path] = []
        step = "preparing"
        try:
            for job in jobs:
                step = f"writing to tmp/ for {job.rcpt}"
                self._ensure_maildir(job.maildir)
                tmp = job.maildir / "tmp" / job.name
                _write_new_file(tmp, (job.head, message), created=tmp_files)
        except OSError as exc:
            _remove_all(tmp_files)
            raise TemporaryError(f"maildir: {step} failed: {_why(exc)}") from exc

        linked: list[Path] = []
        try:
            for job in jobs:
                step = f"moving into new/ for {job.rcpt}"
                new = job.maildir / "new" / job.name
                _publish(job.maildir / "tmp" / job.name, new)
                linked.append(new)
            step = "syncing new/"
            for new_dir in dict.fromkeys(job.maildir / "new" for job in jobs):
                _fsync_dir(new_dir)
        except OSError as exc:
            left = _remove_all(linked)
            _remove_all(tmp_files)
            detail = f"; {left} copies could not be removed from new/" if left else ""
            raise TemporaryError(f"maildir: {step} failed: {_why(exc)}{detail}") from exc
        # Delivered: leftovers in tmp/ are harmless (readers clean tmp/ after 36 hours).
        _remove_all(tmp_files)

    def _ensure_maildir(self, maildir: Path) -> None:
        os.makedirs(self._root, mode=_DIR_MODE, exist_ok=True)
        _mkdir(maildir.parent)
        _mkdir(maildir)
        for sub in ("tmp", "new", "cur"):
            _mkdir(maildir / sub)


class MaildirDelivery:
    """The Delivery into `<root>/<domain>/<user>/new`, fsynced before the 250; a fault of
    the disk is qmail-queue's 451 "write error or disk full". A recipient the spool cannot
    name is refused at RCPT (`refuses`); should one reach `deliver` all the same, the
    answer is a permanent 5xx, never a 451 that makes the client retry forever."""

    def __init__(self, spool: MaildirSpool, clock: Clock) -> None:
        self._spool = spool
        self._clock = clock

    def refuses(self, rcpt: str) -> Reply | None:
        try:
            maildir_for(self._spool.root, rcpt)
        except Unnameable as exc:
            return exc.reply
        return None

    async def deliver(self, sender: str, rcpts: Sequence[str], message: Message, *,
                      authenticated: bool = False) -> Delivered:
        try:
            queue_id = await self._spool.deliver(message, sender, rcpts)
        except Unnameable as exc:
            log.error("event=delivery_failed method=maildir error=%r", str(exc))
            return Delivered(False, exc.reply)
        except (TemporaryError, PermanentError, OSError) as exc:
            log.error("event=delivery_failed method=maildir error=%r", str(exc))
            return Delivered(False, replies.QQ_WRITE_ERROR)
        return Delivered(True, replies.accepted_reply(self._clock.now(), queue_id), queue_id)


def _why(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _mkdir(path: Path) -> None:
    # One level at a time: os.makedirs ignores `mode` for intermediate directories.
    try:
        os.mkdir(path, _DIR_MODE)
    except OSError:
        # A read-only filesystem may say EROFS rather than EEXIST for an existing directory.
        if path.is_dir():
            return
        raise
    _fsync_dir(path.parent)  # make the new directory entry durable too


def _write_new_file(path: Path, chunks: Sequence[bytes | Body], *,
                    created: list[Path]) -> None:
    """Create `path` exclusively, record it in `created` (for clean-up), write, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
    created.append(path)
    try:
        _write_all(fd, chunks)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, chunks: Sequence[bytes | Body]) -> None:
    """Write each chunk; a Body piece by piece (a spooled one is read as it goes)."""
    for chunk in chunks:
        for piece in chunk.chunks() if isinstance(chunk, Body) else (chunk,):
            view = memoryview(piece)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view) :]


def _publish(tmp: Path, new: Path) -> None:
    # link(), not rename(): it fails instead of overwriting an existing name (maildir.c).
    os.link(tmp, new)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_all(paths: list[Path]) -> int:
    """Best-effort unlink; returns how many could not be removed."""
    failed = 0
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError:
            failed += 1
    return failed
