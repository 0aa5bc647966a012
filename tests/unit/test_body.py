"""mailguard.body (issue 12): a message in memory or in an unlinked spool file, views
that replace its head without copying it, and the writer that spills past the
threshold and keeps a disk failure for a 451."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mailguard.body import Body, Spooler, SpoolFile, as_body, spooler_for
from mailguard.config import load
from mailguard.errors import ConfigError
from mailguard.headers import edit, edit_body

MESSAGE = b"Received: from x\nSubject: hello\nX-Spam-Flag: YES\n\n" + b"line\n" * 5000
# 200 KB of headers, the one to drop last: read past the first 64 KiB window
LONG_HEAD = (b"Subject: long\n" + b"X-Filler: 0123456789abcdef0123456789\n" * 6000
             + b"X-Spam-Flag: YES\n\n" + b"body\n" * 100000)


def open_fds_under(directory: Path) -> list[str]:
    """Descriptors of this process on files in `directory` (unlinked ones included)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            out.append(target)
    return out


def spooled(tmp_path: Path, data: bytes) -> Body:
    f = SpoolFile(str(tmp_path / "spool"))
    f.append(data[:1000])
    f.append(data[1000:])
    return Body(file=f)


def test_the_spool_file_is_unlinked_and_released_on_close(tmp_path: Path) -> None:
    body = spooled(tmp_path, MESSAGE)
    assert os.listdir(tmp_path / "spool") == []  # never visible: nothing to leak
    assert len(open_fds_under(tmp_path / "spool")) == 1
    assert body.spooled and body.size == len(MESSAGE) == len(body)
    assert body.read_all() == bytes(body) == MESSAGE
    body.close()
    body.close()  # idempotent
    assert open_fds_under(tmp_path / "spool") == []


@pytest.mark.parametrize("where", ["memory", "file"])
def test_views_replace_the_head_and_share_the_rest(tmp_path: Path, where: str) -> None:
    body = Body(MESSAGE) if where == "memory" else spooled(tmp_path, MESSAGE)
    view = body.prepend(b"Received: ours\n")
    assert view.read_all() == b"Received: ours\n" + MESSAGE
    assert view.head(20) == b"Received: ours\nRecei"
    cut = view.replace_head(20, b"X")  # beyond the prefix: skips into the base
    assert cut.read_all() == b"X" + (b"Received: ours\n" + MESSAGE)[20:]
    assert cut.replace_head(1, b"").read_all() == (b"Received: ours\n" + MESSAGE)[20:]
    for size in (1, 7, 4096, 1 << 20):
        assert b"".join(cut.chunks(size)) == cut.read_all()

    async def streamed() -> bytes:
        return b"".join([bytes(p) async for p in cut.stream(999)])

    assert asyncio.run(streamed()) == cut.read_all()
    body.close()


@pytest.mark.parametrize("where", ["memory", "file"])
@pytest.mark.parametrize("text", [MESSAGE, LONG_HEAD], ids=["short", "long-headers"])
def test_edit_body_equals_edit_on_the_whole_message(tmp_path: Path, where: str,
                                                    text: bytes) -> None:
    body = Body(text) if where == "memory" else spooled(tmp_path, text)
    kwargs = {"drop": lambda name: name == "x-spam-flag",
              "prepend": ["X-MailGuard-Virus-Scan: clean"], "subject_prefix": "[SPAM]"}
    edited = edit_body(body, **kwargs).read_all()  # type: ignore[arg-type]
    assert edited == edit(text, **kwargs)  # type: ignore[arg-type]
    assert b"X-Spam-Flag" not in edited
    body.close()


def test_a_spooled_header_block_is_read_up_to_its_limit(tmp_path: Path) -> None:
    body = spooled(tmp_path, MESSAGE)
    assert body.header_block(1 << 20) == MESSAGE  # all of it fits
    block = body.header_block(100)
    assert block.endswith(b"\n") and len(block) <= 100 and MESSAGE.startswith(block)
    assert Body(MESSAGE).header_block(100) == MESSAGE  # in memory: as before issue 12
    body.close()


def test_close_waits_for_a_read_in_a_thread(tmp_path: Path) -> None:
    """A session cancelled while a thread reads: the descriptor stays open until the read
    ends (a reused fd number must never be read by mistake), then it is released."""
    f = SpoolFile(str(tmp_path / "spool"))
    f.append(b"abc")
    f._enter()  # a read in flight
    f.close()
    assert open_fds_under(tmp_path / "spool")
    with pytest.raises(ValueError, match="closed"):
        f.pread(1, 0)  # nothing new starts
    f._leave()
    assert open_fds_under(tmp_path / "spool") == []


def run_writer(spooler: Spooler, pieces: list[bytes]) -> tuple[Body | None, OSError | None]:
    async def go() -> tuple[Body | None, OSError | None]:
        w = spooler.writer()
        buf = bytearray()
        for p in pieces:
            buf += p
            if len(buf) >= w.flush_at():
                await w.flush(buf)
        try:
            return await w.finish(buf), w.error
        except OSError:
            return None, w.error
    return asyncio.run(go())


def test_the_writer_spills_past_the_threshold_only(tmp_path: Path) -> None:
    spooler = Spooler(str(tmp_path / "spool"), 4096)
    small, err = run_writer(spooler, [b"x" * 100] * 40)
    assert small is not None and err is None and not small.spooled and small.size == 4000
    big, err = run_writer(spooler, [b"y" * 100] * 50)
    assert big is not None and err is None and big.spooled
    assert big.read_all() == b"y" * 5000
    big.close()
    assert open_fds_under(tmp_path / "spool") == []


def test_a_disk_failure_is_kept_and_nothing_is_left_open(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    spooler = Spooler(str(tmp_path / "file" / "spool"), 4096)
    body, err = run_writer(spooler, [b"z" * 1000] * 20)
    assert body is None and isinstance(err, OSError)


def test_bytes_and_bodies_are_both_messages() -> None:
    b = Body(b"abc")
    assert as_body(b) is b and as_body(b"abc").read_all() == b"abc"
    assert not b.spooled and b.prepend(b"").read_all() == b"abc"


@pytest.mark.parametrize(("server", "delivery", "expected"), [
    ({}, {"method": "maildir", "spool": "/srv/mail"}, "/srv/mail/.incoming"),
    ({}, {"method": "qmail-queue"}, "/var/tmp"),
    ({"spool_dir": "/big/disk"}, {"method": "maildir", "spool": "/srv/mail"}, "/big/disk"),
])
def test_the_spool_directory(server: dict[str, object], delivery: dict[str, object],
                             expected: str) -> None:
    spooler = spooler_for(load(None, {"server": server, "delivery": delivery}))
    assert spooler == Spooler(expected, 1_048_576)


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("spool_threshold_bytes", 0, "must be between 4096 and 67108864, got 0"),
    ("spool_threshold_bytes", 1 << 30, "must be between 4096 and 67108864"),
    ("spool_dir", "relative/dir", "must be an absolute path"),
])
def test_spool_settings_are_checked(key: str, value: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        load(None, {"server": {key: value}})


def test_a_session_cancelled_while_the_file_is_made_leaves_nothing_open(
    tmp_path: Path
) -> None:
    async def go() -> None:
        w = Spooler(str(tmp_path / "spool"), 4096).writer()
        task = asyncio.create_task(w.flush(bytearray(b"x" * 5000)))
        await asyncio.sleep(0)  # now waiting for the worker thread to make the file
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):  # the thread ends, its file is closed at once
            if (tmp_path / "spool").is_dir() and not open_fds_under(tmp_path / "spool"):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(open_fds_under(tmp_path / "spool"))

    asyncio.run(go())
