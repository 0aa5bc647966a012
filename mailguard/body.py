"""The message as the daemon holds it (issue 12): bytes in memory up to `[server]
spool_threshold_bytes`, an unlinked temporary file in `[server] spool_dir` beyond, so
that what a message costs in memory is bounded by configuration, not by the client.

A `Body` is `prefix + base[skip:]`: header edits (our Received line, spam tags) make a
new Body whose prefix replaces the first bytes, sharing the base — the text of a big
message is never copied. Readers take `head(n)` / `header_block()` (header parsing),
`chunks()` (in a worker thread: Maildir, quarantine) or `stream()` (on the event loop:
clamd, the qmail-queue program), or `read_all()` when the size is known to be small
(spamd gets nothing above its own limit).

The file is created unlinked (O_TMPFILE, or unlinked at once), so no crash can leave
it behind; closing the Body (its owner does, on every way out) releases the space. It
is not fsynced: the copy that counts (the Maildir file, qmail-queue's) is. Design
notes: docs/spooling.md."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailguard.config import Config

CHUNK_BYTES = 1 << 20  # one read or write of the spool file
HEADER_BLOCK_MAX = 1 << 20  # the most of a spooled message's header block we edit or parse
DEFAULT_DIR = "/var/tmp"  # disk, not tmpfs (FHS), when no Maildir spool is configured


class SpoolFile:
    """An unlinked temporary file. Reads and writes may run in worker threads; `close`
    waits for none of them but defers the real close until the last one ends, so a
    cancelled session never closes a descriptor a thread is still using (a reused fd
    number would be read or written by mistake)."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=directory, buffering=0)  # noqa: SIM115
        self._fd = self._file.fileno()
        self.size = 0
        self._lock = threading.Lock()
        self._busy = 0
        self._closing = False

    @property
    def closed(self) -> bool:
        return self._closing

    def _enter(self) -> None:
        with self._lock:
            if self._closing:
                raise ValueError("spool file closed")
            self._busy += 1

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1
            last = self._closing and self._busy == 0
        if last:
            self._file.close()

    def append(self, data: bytes) -> None:
        """Write `data` at the end (blocking: call from a worker thread)."""
        self._enter()
        try:
            view = memoryview(data)
            offset = self.size
            while view:  # pwrite may write less than asked
                n = os.pwrite(self._fd, view, offset)
                view = view[n:]
                offset += n
            self.size += len(data)
        finally:
            self._leave()

    def pread(self, n: int, offset: int) -> bytes:
        """`n` bytes at `offset` (fewer at the end)."""
        self._enter()
        try:
            out = os.pread(self._fd, n, offset)
            while len(out) < n and offset + len(out) < self.size:
                more = os.pread(self._fd, n - len(out), offset + len(out))
                if not more:
                    break
                out += more
            return out
        finally:
            self._leave()

    def close(self) -> None:
        """Release the file (at once, or when the last read/write in a thread ends)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            now = self._busy == 0
        if now:
            self._file.close()


class Body:
    """A message: `prefix + base[skip:]`, the base being bytes or a SpoolFile. Views made
    by `replace_head` share the base; only the owner (who created the first Body) closes
    it, after every view is done."""

    __slots__ = ("_data", "_file", "_prefix", "_skip")

    def __init__(self, data: bytes = b"", *, file: SpoolFile | None = None,
                 prefix: bytes = b"", skip: int = 0) -> None:
        self._data = data
        self._file = file
        self._prefix = prefix
        self._skip = skip

    @property
    def spooled(self) -> bool:
        """The text is in a temporary file (bigger than the threshold)."""
        return self._file is not None

    @property
    def size(self) -> int:
        base = self._file.size if self._file is not None else len(self._data)
        return len(self._prefix) + base - self._skip

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return self.read_all()

    def __repr__(self) -> str:
        where = "file" if self._file is not None else "memory"
        return f"<Body {self.size} bytes in {where}>"

    def replace_head(self, k: int, new: bytes) -> Body:
        """A view with `new` in place of the first `k` bytes (k ≤ size); nothing copied
        but the prefix."""
        if k <= len(self._prefix):
            return Body(self._data, file=self._file, prefix=new + self._prefix[k:],
                        skip=self._skip)
        return Body(self._data, file=self._file, prefix=new,
                    skip=self._skip + k - len(self._prefix))

    def prepend(self, head: bytes) -> Body:
        return self.replace_head(0, head) if head else self

    def head(self, n: int) -> bytes:
        """The first `n` bytes (all when shorter). Reads the file directly: keep `n` small
        (header parsing), as the event loop may be waiting."""
        p = self._prefix
        if n <= len(p):
            return p[:n]
        want = n - len(p)
        if self._file is None:
            return p + self._data[self._skip : self._skip + want]
        return p + self._file.pread(want, self._skip)

    def header_block(self, limit: int = HEADER_BLOCK_MAX) -> bytes:
        """What header editing and parsing read: the whole message when it is in memory
        (as before issue 12), else its first `limit` bytes cut after the last line end
        (a header block longer than that is edited in its first `limit` bytes only)."""
        if self._file is None:
            return self.read_all()
        n = min(1 << 16, limit)  # headers are short: read more only when they are not
        while True:
            head = self.head(n)
            if len(head) == self.size:
                return head
            if n >= limit or b"\n\n" in head or b"\n\r\n" in head:
                return head[: head.rfind(b"\n") + 1]
            n = min(n * 4, limit)

    def read_all(self) -> bytes:
        """The whole message in memory: only for sizes known to be small."""
        if self._file is None:
            data = self._data[self._skip :] if self._skip else self._data
            return self._prefix + data if self._prefix else data
        return self._prefix + self._file.pread(self._file.size - self._skip, self._skip)

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes | memoryview]:
        """The message in pieces of at most about `size` bytes, reading the file as it
        goes (blocking: for worker threads, or for bodies known to be in memory)."""
        if self._prefix:
            yield self._prefix
        if self._file is None:
            view = memoryview(self._data)[self._skip :]
            for start in range(0, len(view), size):
                yield view[start : start + size]
            return
        offset, end = self._skip, self._file.size
        while offset < end:
            piece = self._file.pread(min(size, end - offset), offset)
            if not piece:
                return
            offset += len(piece)
            yield piece

    async def stream(self, size: int = CHUNK_BYTES) -> AsyncGenerator[bytes | memoryview, None]:
        """`chunks`, for the event loop: file reads run in a worker thread."""
        if self._file is None:
            for piece in self.chunks(size):
                yield piece
            return
        if self._prefix:
            yield self._prefix
        loop = asyncio.get_running_loop()
        offset, end = self._skip, self._file.size
        while offset < end:
            piece = await loop.run_in_executor(None, self._file.pread,
                                               min(size, end - offset), offset)
            if not piece:
                return
            offset += len(piece)
            yield piece

    def close(self) -> None:
        """Release the spool file (idempotent; every view shares it)."""
        if self._file is not None:
            self._file.close()


async def _create(loop: asyncio.AbstractEventLoop, directory: str) -> SpoolFile:
    """A SpoolFile made in a worker thread; if we are cancelled meanwhile, the file the
    thread still makes is closed, not left to the garbage collector."""
    made = loop.run_in_executor(None, SpoolFile, directory)
    try:
        return await asyncio.shield(made)
    except asyncio.CancelledError:
        made.add_done_callback(_close_made)
        raise


def _close_made(made: asyncio.Future[SpoolFile]) -> None:
    if not made.cancelled() and made.exception() is None:
        made.result().close()


Message = bytes | Body  # what hand-overs and scanners accept


def as_body(message: Message) -> Body:
    return message if isinstance(message, Body) else Body(message)


@dataclass(frozen=True, slots=True)
class Spooler:
    """Where and from which size received messages go to disk."""

    directory: str
    threshold_bytes: int

    def writer(self) -> BodyWriter:
        return BodyWriter(self)


def spooler_for(config: Config) -> Spooler:
    """`[server] spool_dir`, or by default `.incoming` in the Maildir spool (the same
    filesystem as the accepted copies: a full disk shows while receiving), else
    DEFAULT_DIR; with `[server] spool_threshold_bytes`."""
    server = config.server
    directory = server.spool_dir
    if not directory:
        if config.delivery.method == "maildir" and config.delivery.spool:
            directory = os.path.join(config.delivery.spool, ".incoming")
        else:
            directory = DEFAULT_DIR
    return Spooler(directory, server.spool_threshold_bytes)


class BodyWriter:
    """Builds a Body from pieces: kept in memory up to the threshold, then appended to a
    SpoolFile from a worker thread in CHUNK_BYTES pieces (the loop never waits for the
    disk). A failure of the disk (full, missing directory) is kept in `error`; what
    follows is dropped, and the caller answers 451 once the client has sent it all."""

    def __init__(self, spooler: Spooler) -> None:
        self._spooler = spooler
        self._file: SpoolFile | None = None
        self.error: OSError | None = None

    def flush_at(self) -> int:
        """How many buffered bytes call for `flush` (the caller's buffer bound)."""
        if self._file is None:
            return self._spooler.threshold_bytes + 1
        return min(CHUNK_BYTES, max(self._spooler.threshold_bytes, 1 << 16))

    async def flush(self, buf: bytearray) -> None:
        """Move `buf` (emptied) to the spool file, creating it the first time."""
        data = bytes(buf)
        buf.clear()
        if self.error is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            if self._file is None:
                self._file = await _create(loop, self._spooler.directory)
            await loop.run_in_executor(None, self._file.append, data)
        except OSError as exc:
            self.error = exc
            self.discard()

    async def finish(self, buf: bytearray) -> Body:
        """The Body: `buf` alone when nothing was spooled, else the file with the rest
        of `buf` appended. OSError (kept in `error`, file dropped) if the disk fails."""
        if self.error is not None:
            raise self.error
        if self._file is None:
            return Body(bytes(buf))
        if buf:
            await self.flush(buf)
        if self.error is not None or self._file is None:
            raise self.error or OSError("spool file dropped")
        return Body(file=self._file)

    def discard(self) -> None:
        """Drop what was spooled (too big, failed, client gone)."""
        if self._file is not None:
            self._file.close()
            self._file = None
