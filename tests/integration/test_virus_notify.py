"""MailNotifier through the real hand-overs: the Maildir spool and a qmail-queue program
(the recording one), reading what arrived; failures are counted and never raised."""

from __future__ import annotations

import base64
import email
import email.policy
import os
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailguard.body import Message
from mailguard.clock import FrozenClock
from mailguard.delivery.base import Delivered, Delivery
from mailguard.delivery.maildir import MaildirDelivery, MaildirSpool
from mailguard.delivery.qmail_queue import QmailQueueDelivery
from mailguard.errors import TemporaryError
from mailguard.metrics import Metrics
from mailguard.notify.languages import prefs_languages
from mailguard.notify.templates import TemplateSet
from mailguard.notify.virus import NOTIFICATIONS_METRIC, MailNotifier
from mailguard.scanning.notify_api import VirusNotifier
from mailguard.settings.virus import VirusConfig

RECORDER = str(Path(__file__).resolve().parents[1] / "tools" / "recording_qmail_queue.py")
HOST = "mx.example.com"
VIRUS = "Win.Test.EICAR_HDB-1"
ORIGINAL = (
    b"From: Carol <carol@example.com>\r\nTo: alice@example.com\r\nSubject: report\r\n"
    b"X-Marker: original-headers\r\n\r\n"
    b"--b\r\nContent-Type: application/zip\r\n\r\nUEsDBBODY-SECRET\r\n--b--\r\n"
)
LANGS = {"alice@example.com": "fr", "example.org": "es"}


def language_for(addr: str) -> str | None:
    return LANGS.get(addr) or LANGS.get(addr.rpartition("@")[2])


def is_local(domain: str) -> bool:
    return domain in ("example.com", "example.org")


def notifier(delivery: Delivery, metrics: Metrics, cfg: VirusConfig | None = None) -> MailNotifier:
    return MailNotifier(
        delivery,
        cfg=cfg or VirusConfig(),
        hostname=HOST,
        is_local=is_local,
        language_for=language_for,
        clock=FrozenClock(),
        templates=TemplateSet.load(),
        metrics=metrics,
    )


def spooled(root: Path) -> dict[str, bytes]:
    """What the Maildir spool holds, by "domain/user"."""
    return {f"{p.parts[-4]}/{p.parts[-3]}": p.read_bytes() for p in root.glob("*/*/new/*")}


def body_text(data: bytes) -> str:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body()
    assert part is not None
    text = part.get_content()
    assert isinstance(text, str)
    return text


def sent(metrics: Metrics, kind: str, result: str) -> float:
    return metrics.value(NOTIFICATIONS_METRIC, kind=kind, result=result)


async def test_warnings_arrive_in_the_maildir_spool(tmp_path: Path) -> None:
    metrics = Metrics()
    spool = MaildirSpool(tmp_path / "spool", FrozenClock(), hostname=HOST)
    n: VirusNotifier = notifier(MaildirDelivery(spool, FrozenClock()), metrics)
    await n.notify(
        ORIGINAL,
        "carol@example.com",
        ["alice@example.com", "bob@example.org", "far@remote.test"],
        VIRUS,
    )
    delivered = spooled(tmp_path / "spool")
    assert sorted(delivered) == [
        "example.com/alice",
        "example.com/carol",
        "example.org/bob",
        "mx.example.com/postmaster",
    ]
    for who, data in delivered.items():
        assert data.startswith(b"Return-Path: <>\nDelivered-To: ")  # the null sender
        msg = email.message_from_bytes(data, policy=email.policy.default)
        assert msg["Subject"] == f"VIRUS WARNING : {VIRUS}", who
        text = body_text(data)
        assert "    X-Marker: original-headers\n" in text and "BODY-SECRET" not in text
    assert "Ceci est un message automatique" in body_text(delivered["example.com/alice"])
    assert "Este es un mensaje automático" in body_text(delivered["example.org/bob"])
    assert "This is an automatic message" in body_text(delivered["example.com/carol"])
    for kind in ("virus_recipient", "virus_sender", "virus_admin"):
        assert sent(metrics, kind, "failed") == 0 and sent(metrics, kind, "error") == 0
    assert sent(metrics, "virus_recipient", "sent") == 2  # one per language
    assert sent(metrics, "virus_sender", "sent") == 1
    assert sent(metrics, "virus_admin", "sent") == 1


def recorded(directory: Path) -> list[tuple[bytes, bytes]]:
    envs = sorted(directory.glob("*.env"))
    return [(e.with_suffix(".msg").read_bytes(), e.read_bytes()) for e in envs]


async def test_warnings_go_through_qmail_queue_with_a_null_sender(tmp_path: Path) -> None:
    record_dir = tmp_path / "queue"
    record_dir.mkdir()
    env = {"PATH": os.environ.get("PATH", os.defpath), "RECORD_DIR": str(record_dir)}
    delivery = QmailQueueDelivery([RECORDER], FrozenClock(), timeout_s=20, env=env)
    metrics = Metrics()
    n = notifier(delivery, metrics, VirusConfig(admin="av@example.org"))
    # a forged foreign sender: not warned (backscatter); two local recipients in one
    # language share a warning
    await n.notify(
        ORIGINAL,
        "forged@elsewhere.test",
        ["bob@example.com", "dave@example.com", "far@remote.test"],
        VIRUS,
    )
    got = recorded(record_dir)
    envelopes = sorted(e for _, e in got)
    assert envelopes == [b"F\0Tav@example.org\0\0", b"F\0Tbob@example.com\0Tdave@example.com\0\0"]
    for message, _ in got:
        assert b"\r" not in message
        assert message.startswith(b"Date: ") and b"\nAuto-Submitted: auto-generated\n" in message
        assert f"\nSubject: VIRUS WARNING : {VIRUS}\n".encode() in message
    assert sent(metrics, "virus_sender", "sent") == 0
    assert sent(metrics, "virus_recipient", "sent") == 1
    assert sent(metrics, "virus_admin", "sent") == 1

    # authenticated: the same foreign sender is warned now
    await n.notify(
        ORIGINAL, "forged@elsewhere.test", ["bob@example.com"], VIRUS, authenticated=True
    )
    assert b"F\0Tforged@elsewhere.test\0\0" in [e for _, e in recorded(record_dir)]


async def test_a_refusing_queue_is_counted_and_never_raises(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "RECORD_DIR": str(tmp_path),
        "FAKE_QQ_EXIT": "53",
    }
    metrics = Metrics()
    delivery = QmailQueueDelivery([RECORDER], FrozenClock(), timeout_s=20, env=env)
    await notifier(delivery, metrics).notify(ORIGINAL, "", ["alice@example.com"], VIRUS)
    assert sent(metrics, "virus_recipient", "failed") == 1
    assert sent(metrics, "virus_admin", "failed") == 1
    assert sent(metrics, "virus_recipient", "sent") == 0


async def test_an_unwritable_spool_is_counted(tmp_path: Path) -> None:
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the spool directory should be")
    metrics = Metrics()
    delivery = MaildirDelivery(MaildirSpool(blocker, FrozenClock(), hostname=HOST), FrozenClock())
    await notifier(delivery, metrics).notify(ORIGINAL, "", ["alice@example.com"], VIRUS)
    assert sent(metrics, "virus_recipient", "failed") == 1
    assert sent(metrics, "virus_admin", "failed") == 1


class ExplodingDelivery:
    """A hand-over with a bug: raises instead of answering."""

    def __init__(self) -> None:
        self.calls = 0

    async def deliver(self, sender: str, rcpts: Sequence[str], message: Message, *,
                      authenticated: bool = False) -> Delivered:
        self.calls += 1
        raise RuntimeError("bug in a delivery")


async def test_an_exception_in_one_warning_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    delivery = ExplodingDelivery()
    await notifier(delivery, metrics).notify(
        ORIGINAL, "carol@example.com", ["alice@example.com"], VIRUS
    )
    assert delivery.calls == 3
    for kind in ("virus_recipient", "virus_sender", "virus_admin"):
        assert sent(metrics, kind, "error") == 1
    assert "event=notification_failed" in caplog.text
    assert f'{NOTIFICATIONS_METRIC}{{kind="virus_admin",result="error"}} 1' in metrics.render()


async def test_languages_come_from_the_preference_store(tmp_path: Path) -> None:
    from mailguard.store import migrate  # noqa: PLC0415 - SQLAlchemy only for this test
    from mailguard.store.prefs import PrefsStore  # noqa: PLC0415
    from mailguard.store.repo import Store  # noqa: PLC0415

    url = f"sqlite:///{tmp_path}/mg.db"
    await migrate.upgrade(url)
    store = await Store.open(url)
    try:
        prefs = PrefsStore(store.db)
        await prefs.set_domain("example.com", 1.0, language="es")
        await prefs.set_user("alice@example.com", 1.0, language="fr")
        await prefs.set_user("bob@example.com", 1.0)  # no language of his own: the domain's
        await prefs.set_domain("mx.example.com", 1.0, language="de")  # the admin's domain
        spool = MaildirSpool(tmp_path / "spool", FrozenClock(), hostname=HOST)
        n = MailNotifier(
            MaildirDelivery(spool, FrozenClock()),
            cfg=VirusConfig(),
            hostname=HOST,
            is_local=is_local,
            clock=FrozenClock(),
            templates=TemplateSet.load(),
            languages=prefs_languages(prefs),
        )
        await n.notify(
            ORIGINAL, "", ["Alice@example.com", "bob@example.com", "c@example.org"], VIRUS
        )
    finally:
        await store.close()
    texts = {who: body_text(data) for who, data in spooled(tmp_path / "spool").items()}
    assert "Ceci est un message automatique" in texts["example.com/alice"]
    assert "Este es un mensaje automático" in texts["example.com/bob"]
    assert "This is an automatic message" in texts["example.org/c"]  # no preference anywhere
    assert "Dies ist eine automatisch erzeugte Nachricht" in texts["mx.example.com/postmaster"]


async def test_a_failing_language_lookup_still_warns(tmp_path: Path) -> None:
    async def down(addresses: Sequence[str]) -> dict[str, str | None]:
        raise TemporaryError("store: connection refused")

    spool = MaildirSpool(tmp_path / "spool", FrozenClock(), hostname=HOST)
    metrics = Metrics()
    n = MailNotifier(
        MaildirDelivery(spool, FrozenClock()),
        cfg=VirusConfig(default_language="fr"),
        hostname=HOST,
        is_local=is_local,
        clock=FrozenClock(),
        templates=TemplateSet.load(),
        languages=down,
        metrics=metrics,
    )
    await n.notify(ORIGINAL, "", ["alice@example.com"], VIRUS)
    assert sent(metrics, "virus_recipient", "sent") == 1
    got = spooled(tmp_path / "spool")
    assert sorted(got) == ["example.com/alice", "mx.example.com/postmaster"]
    assert all("Ceci est un message automatique" in body_text(d) for d in got.values())


async def test_eicar_through_the_scanning_engine_and_real_clamd(
    tmp_path: Path, clamd_socket: str
) -> None:
    """The whole slice: the scanning engine refuses EICAR found by the real clamd, and
    the three warnings land in the spool; nothing else does."""
    from mailguard.scanners.clamd import ClamdClient  # noqa: PLC0415
    from tests.scanner_helpers import Scanning, ScanSetup, eicar, with_attachment  # noqa: PLC0415  # noqa: PLC0415

    clock = FrozenClock()
    metrics = Metrics()
    inner = MaildirDelivery(MaildirSpool(tmp_path / "spool", clock, hostname=HOST), clock)
    notifier = MailNotifier(
        inner,
        cfg=VirusConfig(),
        hostname=HOST,
        is_local=is_local,
        clock=clock,
        templates=TemplateSet.load(),
        language_for=language_for,
        metrics=metrics,
    )
    setup = ScanSetup(clamd=ClamdClient([f"unix:{clamd_socket}"], scan_timeout_s=20.0))
    scanning = Scanning(inner, setup, clock=clock, metrics=metrics, notifier=notifier)
    infected = with_attachment("eicar.com", eicar())
    result = await scanning.deliver(
        "carol@example.com", ["alice@example.com", "far@remote.test"], infected
    )
    assert not result.accepted and result.reply.code == 554
    got = spooled(tmp_path / "spool")
    assert sorted(got) == [
        "example.com/alice",
        "example.com/carol",
        "mx.example.com/postmaster",
    ]
    for data in got.values():
        msg = email.message_from_bytes(data, policy=email.policy.default)
        assert str(msg["Subject"]).startswith("VIRUS WARNING : Eicar-Test-Signature")
        text = data.decode("utf-8", "replace")
        assert "see attachment" not in text and base64.b64encode(eicar())[:20].decode() not in text
        assert "    Subject: " in body_text(data)
    assert "Ceci est un message automatique" in body_text(got["example.com/alice"])
