"""Scanning end to end below the SMTP layer: the real clamd and spamd, spamd's
SQL prefs in the mailguard store, groups queued through the recording qmail-queue and
the Maildir spool."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path

import pytest

from mailguard.clock import FrozenClock
from mailguard.delivery.base import Delivery
from mailguard.delivery.maildir import MaildirDelivery, MaildirSpool
from mailguard.delivery.qmail_queue import QmailQueueDelivery
from mailguard.metrics import Metrics
from mailguard.scanners.clamd import ClamdClient
from mailguard.scanners.spamd import SpamdClient
from mailguard.settings.scan import ClamdConfig, SpamConfig, SpamdConfig
from mailguard.store.prefs import PrefsStore
from mailguard.store.repo import Store
from tests.scanner_helpers import (
    HAM_BODY,
    Scanning,
    ScanSetup,
    closed_port,
    eicar,
    fake_server,
    gtube,
    message,
    require_mailguard_prefs,
    with_attachment,
)

RECORDER = str(Path(__file__).resolve().parents[1] / "tools" / "recording_qmail_queue.py")
NOW = 1_795_711_998.0


class RecordingNotifier:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...], str]] = []

    async def notify(self, original: bytes, sender: str, rcpts: Sequence[str], virus: str, *,
                     authenticated: bool = False) -> None:
        self.calls.append((sender, tuple(rcpts), virus))


@pytest.fixture
async def prefs(spamd_prefs: str) -> AsyncIterator[PrefsStore]:
    require_mailguard_prefs(spamd_prefs)
    store = await Store.open(f"sqlite:///{spamd_prefs}")
    try:
        yield PrefsStore(store.db)
    finally:
        await store.close()


@pytest.fixture
def record_dir(tmp_path: Path) -> Path:
    d = tmp_path / "queue"
    d.mkdir()
    return d


def recorder(record_dir: Path, exit_code: int = 0) -> QmailQueueDelivery:
    env = {"PATH": os.environ.get("PATH", os.defpath), "RECORD_DIR": str(record_dir),
           "FAKE_QQ_EXIT": str(exit_code)}
    return QmailQueueDelivery([sys.executable, RECORDER], FrozenClock(NOW), timeout_s=30,
                              env=env)


def recorded(record_dir: Path) -> list[tuple[list[str], bytes]]:
    """(envelope recipients, message) per queued group, in queueing order."""
    out = []
    for env in sorted(record_dir.glob("*.env"), key=lambda p: p.stat().st_mtime_ns):
        parts = env.read_bytes().split(b"\0")
        rcpts = [p[1:].decode() for p in parts[1:] if p.startswith(b"T")]
        out.append((rcpts, env.with_suffix(".msg").read_bytes()))
    return out


def headers(msg: bytes, name: str) -> list[str]:
    return [str(v) for v in message_from_bytes(msg).get_all(name, [])]


class Rig:
    def __init__(self, clamd_socket: str, spamd_addr: tuple[str, int], prefs: PrefsStore) -> None:
        self.clamd = ClamdClient([f"unix:{clamd_socket}"], scan_timeout_s=20)
        self.spamd = SpamdClient([f"{spamd_addr[0]}:{spamd_addr[1]}"], timeout_s=20)
        self.prefs = prefs
        self.metrics = Metrics()
        self.notifier = RecordingNotifier()
        self.domain = f"d{uuid.uuid4().hex[:10]}.test"

    def setup(self, **changes: object) -> ScanSetup:
        base = ScanSetup(clamd=self.clamd, spamd=self.spamd, prefs=self.prefs,
                         spam_cfg=SpamConfig(central_box="central@quarantine.test"))
        return replace(base, **changes)  # type: ignore[arg-type]

    def delivery(self, inner: Delivery, **changes: object) -> Scanning:
        return Scanning(inner, self.setup(**changes), clock=FrozenClock(NOW),
                                metrics=self.metrics, notifier=self.notifier)

    def addr(self, local: str) -> str:
        return f"{local}@{self.domain}"


@pytest.fixture
async def rig(clamd_socket: str, spamd_addr: tuple[str, int],
              prefs: PrefsStore) -> AsyncIterator[Rig]:
    r = Rig(clamd_socket, spamd_addr, prefs)
    yield r
    for row in await prefs.prefs():
        if row.username.endswith(r.domain):
            await prefs.unset_pref(row.username, row.preference)
    await prefs.set_domain(r.domain, NOW, spam_enabled=False)


# --- viruses ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    pytest.param(lambda: message(eicar().decode()), id="plain"),
    pytest.param(lambda: with_attachment("eicar.com", eicar()), id="attachment"),
])
async def test_virus_refused_for_everyone_and_warned(rig: Rig, record_dir: Path,
                                                     body: object) -> None:
    d = rig.delivery(recorder(record_dir))
    rcpts = [rig.addr("a"), rig.addr("b")]
    out = await d.deliver("sender@example.org", rcpts, body())  # type: ignore[operator]
    assert not out.accepted and out.exit_code is None  # mailguard's own refusal
    assert str(out.reply) == "554 5.7.1 message refused: virus " \
        "Eicar-Test-Signature-Mailguard.UNOFFICIAL found"
    assert recorded(record_dir) == []
    assert rig.notifier.calls == [("sender@example.org", tuple(rcpts),
                                   "Eicar-Test-Signature-Mailguard.UNOFFICIAL")]
    assert rig.metrics.value("mailguard_scan_total", scanner="clamd", result="infected") == 1


async def test_clamd_down_or_hung_tempfails(rig: Rig, record_dir: Path, tmp_path: Path) -> None:
    down = ClamdClient([f"unix:{tmp_path}/no.sock", f"127.0.0.1:{closed_port()}"])
    out = await rig.delivery(recorder(record_dir), clamd=down).deliver(
        "s@example.org", [rig.addr("a")], message(HAM_BODY))
    assert str(out.reply) == "451 4.3.0 virus scanner unavailable, try again later"
    assert out.exit_code is None and not out.accepted
    async with fake_server(None) as hung:
        slow = ClamdClient([hung.address], scan_timeout_s=0.3)
        out = await rig.delivery(recorder(record_dir), clamd=slow).deliver(
            "s@example.org", [rig.addr("a")], message(HAM_BODY))
    assert out.reply.code == 451 and out.exit_code is None
    assert recorded(record_dir) == []
    # on_error = "pass": delivered, and it says so
    out = await rig.delivery(recorder(record_dir), clamd=down,
                             clamd_cfg=ClamdConfig(on_error="pass")).deliver(
        "s@example.org", [rig.addr("a")], message(HAM_BODY))
    assert out.accepted and out.exit_code == 0
    [(_, msg)] = recorded(record_dir)
    assert headers(msg, "X-MailGuard-Virus-Scan") == ["unscanned (error)"]
    assert rig.metrics.value("mailguard_scan_total", scanner="clamd", result="error") == 3


@pytest.mark.parametrize(("action", "code", "exit_code"), [
    ("pass", 250, 0), ("tempfail", 451, None), ("reject", 554, None)])
async def test_too_large_for_clamd(rig: Rig, record_dir: Path, action: str, code: int,
                                   exit_code: int | None) -> None:
    small = ClamdClient(rig.clamd.servers, max_size_bytes=100)
    cfg = ClamdConfig(on_too_large=action)  # type: ignore[arg-type]
    out = await rig.delivery(recorder(record_dir), clamd=small, clamd_cfg=cfg).deliver(
        "s@example.org", [rig.addr("a")], message(HAM_BODY))
    assert out.reply.code == code and out.exit_code == exit_code
    if action == "pass":
        [(_, msg)] = recorded(record_dir)
        assert headers(msg, "X-MailGuard-Virus-Scan") == ["skipped (size)"]
    else:
        assert recorded(record_dir) == []


# --- spam, per recipient -----------------------------------------------------------------


async def test_mixed_recipients_become_groups(rig: Rig, record_dir: Path) -> None:
    p, a = rig.prefs, rig.addr
    await p.set_domain(rig.domain, NOW, spam_enabled=True, spam_action="tag")
    await p.set_user(a("rel"), NOW, spam_action="release")
    await p.set_user(a("box"), NOW, spam_action="user-box")
    await p.set_user(a("dbox"), NOW, spam_action="domain-box")
    await p.set_user(a("cbox"), NOW, spam_action="central-box")
    await p.set_user(a("del"), NOW, spam_action="delete")
    await p.set_user(a("off"), NOW, spam_enabled=False)
    await p.set_pref(a("lenient"), "required_score", "2000")
    rcpts = [a("tag1"), a("rel"), a("box"), a("dbox"), a("cbox"), a("del"), a("off"),
             a("lenient"), a("tag2"), "someone@unfiltered.test"]
    msg = message(gtube(), subject="cheap", headers="X-Spam-Flag: NO\nX-Spam-Score: -50\n")
    out = await rig.delivery(recorder(record_dir)).deliver("s@example.org", rcpts, msg)
    assert out.accepted and out.exit_code == 0, out
    groups = {tuple(r): m for r, m in recorded(record_dir)}
    assert set(groups) == {
        (a("tag1"), a("tag2")), (a("rel"),), (f"box-spam@{rig.domain}",),
        (f"spam@{rig.domain}",), ("central@quarantine.test",),
        (a("off"), "someone@unfiltered.test"), (a("lenient"),)}
    tagged = groups[(a("tag1"), a("tag2"))]
    assert headers(tagged, "Subject") == ["[SPAM] cheap"]
    assert headers(tagged, "X-Spam-Flag") == ["YES"]  # the forged NO is gone
    assert float(headers(tagged, "X-Spam-Score")[0]) >= 900
    assert headers(tagged, "X-Spam-Status")[0].startswith("Yes, score=")
    assert "GTUBE" in headers(tagged, "X-Spam-Status")[0]
    assert headers(tagged, "X-MailGuard-Virus-Scan") == ["clean"]
    released = groups[(a("rel"),)]
    assert headers(released, "Subject") == ["cheap"] and headers(released, "X-Spam-Flag") == ["YES"]
    for box, owner in ((f"box-spam@{rig.domain}", a("box")), (f"spam@{rig.domain}", a("dbox")),
                       ("central@quarantine.test", a("cbox"))):
        assert headers(groups[(box,)], "X-MailGuard-Original-Recipient") == [owner]
        assert headers(groups[(box,)], "X-Spam-Flag") == ["YES"]
    untouched = groups[(a("off"), "someone@unfiltered.test")]
    assert untouched == b"X-MailGuard-Virus-Scan: clean\n" + msg  # forged headers and all
    lenient = groups[(a("lenient"),)]
    assert headers(lenient, "X-Spam-Flag") == ["NO"] and headers(lenient, "Subject") == ["cheap"]
    assert "required=2000.0" in headers(lenient, "X-Spam-Status")[0]
    assert rig.metrics.value("mailguard_spam_action_total", action="delete") == 1


async def test_ham_gets_status_headers_only_through_maildir(rig: Rig, tmp_path: Path) -> None:
    await rig.prefs.set_domain(rig.domain, NOW, spam_enabled=True)
    clock = FrozenClock(NOW)
    inner = MaildirDelivery(MaildirSpool(tmp_path / "spool", clock), clock)
    msg = message(HAM_BODY, headers="X-Spam-Flag: YES\n")
    out = await rig.delivery(inner).deliver("s@example.org", [rig.addr("u")], msg)
    assert out.accepted
    [stored] = list((tmp_path / "spool" / rig.domain / "u" / "new").iterdir())
    data = stored.read_bytes()
    assert headers(data, "X-Spam-Flag") == ["NO"]
    assert headers(data, "Subject") == ["test"]
    assert data.endswith(msg.split(b"X-Spam-Flag: YES\n", 1)[1])


async def test_spamd_down_both_policies(rig: Rig, record_dir: Path) -> None:
    await rig.prefs.set_domain(rig.domain, NOW, spam_enabled=True)
    down = SpamdClient([f"127.0.0.1:{closed_port()}"])
    rcpts = [rig.addr("a"), "x@unfiltered.test"]
    out = await rig.delivery(recorder(record_dir), spamd=down).deliver(
        "s@example.org", rcpts, message(gtube()))
    assert str(out.reply) == "451 4.3.0 spam scanner unavailable, try again later"
    assert out.exit_code is None and recorded(record_dir) == []
    out = await rig.delivery(recorder(record_dir), spamd=down,
                             spamd_cfg=SpamdConfig(on_error="pass")).deliver(
        "s@example.org", rcpts, message(gtube()))
    assert out.accepted
    groups = {tuple(r): m for r, m in recorded(record_dir)}
    assert headers(groups[(rig.addr("a"),)], "X-Spam-Status") == ["unscanned"]
    assert headers(groups[("x@unfiltered.test",)], "X-Spam-Status") == []


async def test_spamd_hung_hits_the_deadline(rig: Rig, record_dir: Path) -> None:
    await rig.prefs.set_domain(rig.domain, NOW, spam_enabled=True)
    async with fake_server(None) as hung:
        slow = SpamdClient([hung.address], timeout_s=30)
        out = await rig.delivery(recorder(record_dir), spamd=slow, deadline_s=0.5).deliver(
            "s@example.org", [rig.addr("a")], message(gtube()))
    assert str(out.reply) == "451 4.3.0 message scanning took too long, try again later"
    assert out.exit_code is None and recorded(record_dir) == []


async def test_too_large_for_spamd_is_marked(rig: Rig, record_dir: Path) -> None:
    await rig.prefs.set_domain(rig.domain, NOW, spam_enabled=True)
    out = await rig.delivery(recorder(record_dir),
                             spamd_cfg=SpamdConfig(max_size_bytes=100)).deliver(
        "s@example.org", [rig.addr("a")], message(gtube()))
    assert out.accepted
    [(_, msg)] = recorded(record_dir)
    assert headers(msg, "X-Spam-Status") == ["unscanned (size)"]
    assert headers(msg, "X-Spam-Flag") == []


async def test_all_deleted_is_accepted_and_nothing_queued(rig: Rig, record_dir: Path) -> None:
    await rig.prefs.set_domain(rig.domain, NOW, spam_enabled=True, spam_action="delete")
    out = await rig.delivery(recorder(record_dir)).deliver(
        "s@example.org", [rig.addr("a"), rig.addr("b")], message(gtube()))
    assert out.accepted and out.exit_code == 0 and out.reply.code == 250
    assert recorded(record_dir) == []


async def test_first_group_failing_keeps_its_answer(rig: Rig, record_dir: Path) -> None:
    out = await rig.delivery(recorder(record_dir, exit_code=31)).deliver(
        "s@example.org", [rig.addr("a")], message(HAM_BODY))
    assert out.exit_code == 31
    assert str(out.reply) == "554 mail server permanently rejected message (#5.3.0)"


async def test_later_group_failing_is_temporary(rig: Rig, tmp_path: Path) -> None:
    await rig.prefs.set_domain(rig.domain, NOW, spam_enabled=True, spam_action="central-box")
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "quarantine.test").write_text("not a directory")  # the box cannot be written
    clock = FrozenClock(NOW)
    inner = MaildirDelivery(MaildirSpool(spool, clock), clock)
    out = await rig.delivery(inner).deliver(
        "s@example.org", ["x@unfiltered.test", rig.addr("a")], message(gtube()))
    assert not out.accepted and out.exit_code is None
    assert str(out.reply) == "451 4.3.0 message queued for some recipients only, try again later"
    assert len(list((spool / "unfiltered.test" / "x" / "new").iterdir())) == 1
