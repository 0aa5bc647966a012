"""The quarantine service on SQLite and the real PostgreSQL: copies kept as files plus
rows, scoped reads, a release that happens once however many hosts try at the same
time, a failed delivery that leaves the message held, and expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from mailguard.body import Message
from mailguard.clock import FrozenClock
from mailguard.delivery.base import Delivered
from mailguard.quarantine import QuarantineService, summary_fields
from mailguard.settings.quarantine import QuarantineConfig
from mailguard.store.quarantine import Scope
from mailguard.store.repo import Store
from mailguard.verdict import Reply

MESSAGE = (b"From: =?utf-8?q?B=C3=A4rbel?= <b@spam.example>\n"
           b"Subject: =?utf-8?q?Gro=C3=9Fes_Angebot?=\nTo: joe@example.com\n\nbuy now\n")


class Recorder:
    """A delivery that stores what it is given (and can be told to refuse)."""

    def __init__(self, *, refuse: bool = False, delay_s: float = 0.0) -> None:
        self.got: list[tuple[str, tuple[str, ...], bytes]] = []
        self.refuse = refuse
        self.delay_s = delay_s

    async def deliver(self, sender: str, rcpts: Sequence[str], message: Message, *,
                      authenticated: bool = False) -> Delivered:
        await asyncio.sleep(self.delay_s)
        if self.refuse:
            return Delivered(False, Reply(451, "queue down", "4.3.0"))
        self.got.append((sender, tuple(rcpts), bytes(message)))
        return Delivered(True, Reply(250, "ok"), f"id{len(self.got)}")


def service(store: Store, tmp_path: Path, clock: FrozenClock) -> QuarantineService:
    cfg = QuarantineConfig(directory=str(tmp_path / "q"), days=10)
    return QuarantineService(cfg, store.db, clock)


def test_summary_fields_decode_and_survive_garbage() -> None:
    assert summary_fields(MESSAGE) == ("Bärbel <b@spam.example>", "Großes Angebot")
    assert summary_fields(b"Subject: a\n\tb\x01c\n\nbody") == ("", "a b c")
    assert summary_fields(b"no headers at all") == ("", "")


async def test_keep_scope_release_once_and_purge(store: Store, tmp_path: Path) -> None:
    clock = FrozenClock()
    q = service(store, tmp_path, clock)
    ids = await q.keep(["Joe@Example.com", "ann@example.com"], "b@spam.example", MESSAGE,
                       kind="spam", scores=[7.5, 9.0], reasons=["GTUBE", "GTUBE"])
    assert len(ids) == 2
    joe, ann = ids
    files = sorted((tmp_path / "q").glob("????-??-??/*"))
    assert len(files) == 2 and all(f.read_bytes() == MESSAGE for f in files)
    entry = await q.store.get(joe, Scope(rcpt="joe@example.com"))
    assert entry is not None
    assert (entry.rcpt, entry.domain, entry.score, entry.subject) == (
        "joe@example.com", "example.com", 7.5, "Großes Angebot")
    # scopes: not yours = not found
    assert await q.store.get(joe, Scope(rcpt="ann@example.com")) is None
    assert await q.store.get(joe, Scope(domain="other.test")) is None
    assert [e.id for e in await q.store.page(Scope(domain="example.com"))] == [ann, joe]
    assert await q.store.count(Scope(domain="example.com")) == 2
    # ten parallel releases (two "hosts" sharing the store): one delivery
    delivery = Recorder(delay_s=0.05)
    other = QuarantineService(q.cfg, store.db, clock)
    done = await asyncio.gather(*(
        (q if i % 2 else other).release(joe, Scope(rcpt="joe@example.com"), delivery,
                                        by="joe@example.com") for i in range(10)))
    assert sum(d.ok for d in done) == 1 and len(delivery.got) == 1
    sender, rcpts, message = delivery.got[0]
    assert (sender, rcpts) == ("b@spam.example", ("joe@example.com",))
    assert message.startswith(b"X-MailGuard-Released: by joe@example.com; ")
    assert message.endswith(MESSAGE)
    assert len(list((tmp_path / "q").glob("????-??-??/*"))) == 1
    # a refused delivery leaves the message held, to try again
    refused = await q.release(ann, Scope(), Recorder(refuse=True), by="admin")
    assert not refused.ok and refused.delivered is not None
    held = await q.store.get(ann, Scope())
    assert held is not None and held.status == "held"
    # expiry: the released row stays as history for a week after its release; the held
    # copy (and its file) goes after `days`
    clock.advance(6 * 86400)
    assert await q.purge() == 0
    clock.advance(2 * 86400)
    assert await q.purge() == 1
    assert await q.store.get(joe, Scope()) is None
    assert len(list((tmp_path / "q").glob("????-??-??/*"))) == 1
    clock.advance(3 * 86400)
    assert await q.purge() == 1
    assert list((tmp_path / "q").glob("????-??-??/*")) == []
    assert await q.store.get(ann, Scope()) is None


async def test_virus_copies_are_released_by_admins_only(store: Store, tmp_path: Path) -> None:
    q = service(store, tmp_path, FrozenClock())
    [vid] = await q.keep(["joe@example.com"], "x@example.org", MESSAGE, kind="virus",
                         reasons=["Eicar-Test-Signature"])
    delivery = Recorder()
    user = await q.release(vid, Scope(rcpt="joe@example.com"), delivery, by="joe")
    assert user.delivered is None and delivery.got == []
    admin = await q.release(vid, Scope(), delivery, by="admin", allow_virus=True)
    assert admin.ok and len(delivery.got) == 1
