"""The embedded Maildir delivery against the real filesystem."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from mailguard.clock import FrozenClock
from mailguard.delivery import maildir
from mailguard.delivery.maildir import (
    MaildirDelivery,
    MaildirSpool,
    maildir_for,
    path_component,
)
from mailguard.errors import PermanentError, TemporaryError

MESSAGE = b"Subject: hi\n\nbody line\n"
NAME_RE = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)R[0-9a-f]{8}\.mx\.test$")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(start=1_800_000_000.25)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def spool(root: Path, clock: FrozenClock) -> MaildirSpool:
    return MaildirSpool(root, clock, hostname="mx.test")


def files_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()) if directory.is_dir() else []


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _run(argv: list[str], *, check: bool = False) -> int:
    return subprocess.run(argv, check=check, capture_output=True).returncode


@pytest.fixture
def make_read_only() -> Iterator[Callable[[Path], None]]:
    """Make a directory unwritable: by mode when permissions are enforced, else (root)
    with the immutable attribute; skip when neither works here."""
    undo: list[Callable[[], object]] = []

    def apply(path: Path) -> None:
        path.mkdir(exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(0o555)
        undo.append(lambda: path.chmod(mode))
        probe = path / "probe"
        try:
            probe.mkdir()
        except PermissionError:
            return
        probe.rmdir()
        chattr = shutil.which("chattr")
        if chattr is None or _run([chattr, "+i", str(path)]):
            pytest.skip("cannot make a directory read-only here (root without chattr)")
        undo.append(lambda: _run([chattr, "-i", str(path)], check=True))

    yield apply
    for fn in reversed(undo):
        fn()


async def test_delivers_with_headers_modes_and_maildir_name(
    spool: MaildirSpool, root: Path, clock: FrozenClock
) -> None:
    queue_id = await spool.deliver(MESSAGE, "sender@remote.test", ["user@example.com"])
    box = root / "example.com" / "user"
    assert files_in(box / "tmp") == []
    assert files_in(box / "cur") == []
    [path] = files_in(box / "new")
    assert path.read_bytes() == (
        b"Return-Path: <sender@remote.test>\nDelivered-To: user@example.com\n" + MESSAGE
    )
    match = NAME_RE.match(path.name)
    assert match is not None
    assert int(match[1]) == int(clock.now())
    assert int(match[2]) == 250_000
    assert int(match[3]) == os.getpid()
    assert path.name == f"{queue_id}.mx.test"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (root / "example.com", box, box / "tmp", box / "new", box / "cur"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


async def test_null_sender_case_and_bytes_kept(spool: MaildirSpool, root: Path) -> None:
    crlf = b"Subject: x\r\n\r\n8bit \xe9\x00 bare\rCR\r\n"
    await spool.deliver(crlf, "", ["User.Name@EXAMPLE.Com"])
    [path] = files_in(root / "example.com" / "user.name" / "new")
    assert path.read_bytes() == b"Return-Path: <>\nDelivered-To: User.Name@EXAMPLE.Com\n" + crlf


async def test_header_injection_is_neutralised(spool: MaildirSpool, root: Path) -> None:
    await spool.deliver(MESSAGE, "a\r\nX-Evil: 1", ["u@example.com"])
    [path] = files_in(root / "example.com" / "u" / "new")
    assert path.read_bytes().startswith(b"Return-Path: <a??X-Evil: 1>\nDelivered-To: u@")


async def test_many_recipients(spool: MaildirSpool, root: Path) -> None:
    rcpts = [f"user{i}@d{i % 3}.test" for i in range(30)]
    await spool.deliver(MESSAGE, "s@x.test", rcpts)
    for rcpt in rcpts:
        local, domain = rcpt.split("@")
        [path] = files_in(root / domain / local / "new")
        assert path.read_bytes().split(b"\n")[1] == f"Delivered-To: {rcpt}".encode()
    assert len(all_files(root)) == 30


async def test_same_mailbox_twice_gets_two_copies(spool: MaildirSpool, root: Path) -> None:
    await spool.deliver(MESSAGE, "s@x.test", ["u@example.com", "U@example.com"])
    assert len(files_in(root / "example.com" / "u" / "new")) == 2


async def test_thousand_deliveries_in_one_second_have_unique_names(
    spool: MaildirSpool, root: Path
) -> None:
    ids = {await spool.deliver(MESSAGE, "s@x.test", ["u@example.com"]) for _ in range(1000)}
    names = {p.name for p in files_in(root / "example.com" / "u" / "new")}
    assert len(ids) == 1000
    assert len(names) == 1000
    seconds = {m[1] for n in names if (m := NAME_RE.match(n))}
    assert seconds == {"1800000000"}  # all in the same (frozen) second


async def test_two_spools_in_one_process_do_not_clash(root: Path, clock: FrozenClock) -> None:
    first = MaildirSpool(root, clock, hostname="mx.test")
    second = MaildirSpool(root, clock, hostname="mx.test")
    a = await first.deliver(MESSAGE, "", ["u@example.com"])
    b = await second.deliver(MESSAGE, "", ["u@example.com"])
    assert a != b
    assert len(files_in(root / "example.com" / "u" / "new")) == 2


def test_hostname_slash_and_colon_are_escaped(root: Path, clock: FrozenClock) -> None:
    spool = MaildirSpool(root, clock, hostname="a/b:c")
    assert spool._host == "a\\057b\\072c"


TRAVERSAL = [
    ("../../etc/passwd@x", "x", "%2E.%2F..%2Fetc%2Fpasswd"),  # only a leading dot matters
    ("a/b@c", "c", "a%2Fb"),
    ("u@../x", "%2E.%2Fx", "u"),
    ("u@..", "%2E.", "u"),
    ("..@..", "%2E.", "%2E."),
    (".@.", "%2E", "%2E"),
    ("u@/etc", "%2Fetc", "u"),
    ("\0@x", "x", "%00"),
    (".hidden@x", "x", "%2Ehidden"),
    ("u@x/../../y", "x%2F..%2F..%2Fy", "u"),
    ("%2E%2E@x", "x", "%252e%252e"),  # '%' itself is encoded: no collisions
    ("a b\\c@x", "x", "a%20b%5Cc"),
    ("\u00e9@x", "x", "%C3%A9"),
]


def resolves_inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


@pytest.mark.parametrize("case", TRAVERSAL, ids=[c[0] for c in TRAVERSAL])
async def test_traversal_stays_inside_root(
    tmp_path: Path, spool: MaildirSpool, root: Path, case: tuple[str, str, str]
) -> None:
    rcpt, domain_dir, user_dir = case
    await spool.deliver(MESSAGE, "", [rcpt])
    assert maildir_for(root, rcpt) == root / domain_dir / user_dir
    [path] = all_files(tmp_path)  # nothing anywhere else under tmp_path
    assert path.parent == root / domain_dir / user_dir / "new"
    assert resolves_inside(path, root)


@pytest.mark.parametrize(
    "rcpt", ["@example.com", "u@", "unqualified", "", ("x" * 300) + "@example.com"]
)
async def test_invalid_recipient_is_permanent_and_writes_nothing(
    spool: MaildirSpool, root: Path, rcpt: str
) -> None:
    with pytest.raises(PermanentError):
        await spool.deliver(MESSAGE, "", ["ok@example.com", rcpt])
    assert all_files(root) == []


@pytest.mark.parametrize(
    ("rcpt", "code"),
    [("u@", "5.1.3 sorry, that recipient address has no domain"),
     ("@example.com", "5.1.3 sorry, that recipient address has no local part"),
     (("l" * 300) + "@example.com", "5.1.3 sorry, that mailbox name is too long for this server"),
     ("\u00e9" * 100 + "@example.com",
      "5.1.3 sorry, that mailbox name is too long for this server"),
     ("u@" + "d" * 300, "5.1.3 sorry, that recipient domain is too long for this server"),
     ("ok@example.com", None)],
)
async def test_delivery_refuses_unnameable_recipients_permanently(
    spool: MaildirSpool, clock: FrozenClock, root: Path, rcpt: str, code: str | None
) -> None:
    """Asked at RCPT (`refuses`) and, should one get through, at delivery: a permanent
    5xx for the message, never qmail-queue's 451 that the client would retry forever."""
    delivery = MaildirDelivery(spool, clock)
    refusal = delivery.refuses(rcpt)
    assert (refusal.lines() if refusal else None) == ([f"553 {code}"] if code else None)
    if code:
        delivered = await delivery.deliver("", ["fine@example.com", rcpt], MESSAGE)
        assert (delivered.accepted, delivered.reply) == (False, refusal)
        assert all_files(root) == []


def test_path_component_length_limit() -> None:
    assert path_component("a" * 255, "x") == "a" * 255
    with pytest.raises(PermanentError, match="too long"):
        path_component("a" * 256, "x")
    with pytest.raises(PermanentError, match="too long"):
        path_component("/" * 86, "x")  # 258 bytes once encoded


async def test_no_recipients(spool: MaildirSpool) -> None:
    with pytest.raises(PermanentError):
        await spool.deliver(MESSAGE, "", [])


async def test_read_only_root_is_temporary_and_leaves_nothing(
    spool: MaildirSpool, root: Path, make_read_only: Callable[[Path], None]
) -> None:
    make_read_only(root)
    with pytest.raises(TemporaryError, match=r"maildir: writing to tmp/ for u@example\.com"):
        await spool.deliver(MESSAGE, "", ["u@example.com"])
    assert all_files(root) == []


async def test_unwritable_new_of_one_recipient_rolls_back_all(
    spool: MaildirSpool, root: Path, make_read_only: Callable[[Path], None]
) -> None:
    await spool.deliver(MESSAGE, "", ["b@example.com"])  # creates b's maildir
    old = set(all_files(root))
    make_read_only(root / "example.com" / "b" / "new")
    with pytest.raises(TemporaryError, match=r"moving into new/ for b@example\.com"):
        await spool.deliver(MESSAGE, "", ["a@example.com", "b@example.com"])
    assert set(all_files(root)) == old  # a got nothing in new/, no tmp files left


async def test_disk_full_while_writing_removes_tmp_files(
    spool: MaildirSpool, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = maildir._write_all
    calls = 0

    def write_then_fill(fd: int, chunks: Sequence[bytes]) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            real(fd, [chunks[0][:10]])  # a partial file, then the disk fills up
            raise OSError(28, "No space left on device")
        real(fd, chunks)

    monkeypatch.setattr(maildir, "_write_all", write_then_fill)
    with pytest.raises(TemporaryError, match="No space left on device") as info:
        await spool.deliver(MESSAGE, "", ["a@example.com", "b@example.com", "c@example.com"])
    assert "c@example.com" in str(info.value)
    assert all_files(root) == []
    assert (root / "example.com" / "a" / "tmp").is_dir()  # the directories may stay


async def test_failed_link_rolls_back_the_copies_already_in_new(
    spool: MaildirSpool, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = maildir._publish
    done: list[Path] = []

    def publish(tmp: Path, new: Path) -> None:
        if len(done) == 2:
            raise OSError(30, "Read-only file system", str(new))
        real(tmp, new)
        done.append(new)

    monkeypatch.setattr(maildir, "_publish", publish)
    with pytest.raises(TemporaryError, match="Read-only file system"):
        await spool.deliver(MESSAGE, "", ["a@example.com", "b@other.test", "c@example.com"])
    assert all(not p.exists() for p in done)
    assert all_files(root) == []


async def test_failed_rollback_is_reported(
    spool: MaildirSpool, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail_second(tmp: Path, new: Path) -> None:
        if "b@" in tmp.read_bytes().decode(errors="replace").split("\n")[1]:
            raise OSError(5, "Input/output error")
        os.link(tmp, new)

    real_remove = maildir._remove_all

    def cannot_remove_from_new(paths: list[Path]) -> int:
        if any(p.parent.name == "new" for p in paths):
            return len(paths)
        return real_remove(paths)

    monkeypatch.setattr(maildir, "_publish", fail_second)
    monkeypatch.setattr(maildir, "_remove_all", cannot_remove_from_new)
    with pytest.raises(TemporaryError, match="1 copies could not be removed from new/"):
        await spool.deliver(MESSAGE, "", ["a@example.com", "b@example.com"])
