"""Addresses with 8-bit bytes that are not UTF-8 (qmail takes any byte; the front end
keeps them as surrogate escapes): the store answers them the same way on both backends
(TemporaryError, never a stray UnicodeEncodeError that skips the failure policy), the
spam preferences of such a recipient are simply absent, and spamd gets its bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailguard.clock import FrozenClock
from mailguard.delivery.maildir import MaildirDelivery, MaildirSpool
from mailguard.errors import TemporaryError
from mailguard.metrics import Metrics
from mailguard.scanners.spamd import SpamdClient
from mailguard.store.greylist import GreylistStore
from mailguard.store.prefs import PrefsStore
from mailguard.store.repo import Store
from mailguard.store.users import UserStore
from tests.e2e.daemon_harness import run_cli
from tests.scanner_helpers import Scanning, ScanSetup, gtube, message

EIGHT_BIT = b"\xff\xfe@example.com".decode("utf-8", "surrogateescape")
NOW = 1_795_711_998.0


async def test_store_refuses_unencodable_text_as_temporary_error(store: Store) -> None:
    with pytest.raises(TemporaryError, match="greylist update"):
        await GreylistStore(store.db).update(
            "192.0.2.0/24", "s@example.org", EIGHT_BIT, lambda e, c: (None, None, 0))
    with pytest.raises(TemporaryError, match="suspending user"):
        await UserStore(store.db).suspend(EIGHT_BIT, "test", NOW)


async def test_prefs_of_an_unencodable_recipient_are_absent(store: Store) -> None:
    prefs = PrefsStore(store.db)
    await prefs.set_domain("example.com", NOW, spam_enabled=True)
    users, domains = await prefs.lookup([EIGHT_BIT])
    assert users == {} and set(domains) == {"example.com"}  # the domain's rules apply


def test_cli_reports_an_unencodable_name_without_a_traceback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    assert run_cli("db", "upgrade", "--store", url).returncode == 0
    done = run_cli("user", "suspend", EIGHT_BIT, "--store", url)
    assert done.returncode == 1
    assert done.stderr.startswith("mailguard: store: suspending user failed")
    assert "Traceback" not in done.stderr


async def test_spamd_scans_an_eight_bit_recipient(spamd_addr: tuple[str, int], tmp_path: Path,
                                                  store: Store) -> None:
    prefs = PrefsStore(store.db)
    await prefs.set_domain("example.com", NOW, spam_enabled=True)
    spamd = SpamdClient([f"{spamd_addr[0]}:{spamd_addr[1]}"], timeout_s=20)
    result = await spamd.check(message(gtube()), EIGHT_BIT)
    assert result.spam
    clock = FrozenClock(NOW)
    inner = MaildirDelivery(MaildirSpool(tmp_path / "spool", clock), clock)
    engine = Scanning(inner, ScanSetup(spamd=spamd, prefs=prefs), clock=clock,
                              metrics=Metrics())
    out = await engine.deliver("s@example.org", [EIGHT_BIT], message(gtube(), subject="x"))
    assert out.accepted, out
    [stored] = list((tmp_path / "spool").rglob("new/*"))
    assert b"\nSubject: [SPAM] x\n" in stored.read_bytes()
