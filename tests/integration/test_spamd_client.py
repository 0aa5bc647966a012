"""SpamdClient against the real spamd, whose SQL preferences are the mailguard store's
userpref table: what PrefsStore writes changes spamd's verdict on the next message."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from mailguard.errors import PermanentError, TemporaryError
from mailguard.scanners.spamd import SpamdClient
from mailguard.store.prefs import PrefsStore
from mailguard.store.repo import Store
from tests.scanner_helpers import (
    HAM_BODY,
    closed_port,
    fake_server,
    gtube,
    message,
    require_mailguard_prefs,
)
from tests.services import TestServices, missing


@pytest.fixture
def spamd(spamd_addr: tuple[str, int]) -> SpamdClient:
    return SpamdClient([f"{spamd_addr[0]}:{spamd_addr[1]}"], timeout_s=20.0)


@pytest.fixture
async def prefs(spamd_prefs: str) -> AsyncIterator[PrefsStore]:
    """The mailguard store on spamd's own prefs database."""
    require_mailguard_prefs(spamd_prefs)
    store = await Store.open(f"sqlite:///{spamd_prefs}")
    try:
        yield PrefsStore(store.db)
    finally:
        await store.close()


def unique_domain() -> str:
    return f"d{uuid.uuid4().hex[:10]}.test"


async def test_gtube_is_spam_ham_is_not(spamd: SpamdClient) -> None:
    spam = await spamd.check(message(gtube()), "someone@example.com")
    assert spam.spam and spam.score >= 900 and spam.threshold == 5.0
    assert "GTUBE" in spam.symbols
    ham = await spamd.check(message(HAM_BODY), "someone@example.com")
    assert not ham.spam and ham.score < 5.0
    await spamd.ping()


async def test_report_lists_rules(spamd: SpamdClient) -> None:
    result = await spamd.check(message(gtube()), report=True)
    assert result.spam and "GTUBE" in result.symbols
    assert "Content analysis details" in result.report


async def test_unix_socket(services: TestServices, spamd_addr: tuple[str, int]) -> None:
    if not services.spamd_socket:
        missing("no spamd socket")
    client = SpamdClient([f"unix:{services.spamd_socket}"], timeout_s=20)
    assert (await client.check(message(gtube()))).spam


async def test_user_rows_flip_verdicts(spamd: SpamdClient, prefs: PrefsStore) -> None:
    dom = unique_domain()
    lenient, strict, listed = f"lenient@{dom}", f"strict@{dom}", f"listed@{dom}"
    spam, ham = message(gtube()), message(HAM_BODY)
    await prefs.set_pref(lenient, "required_score", "2000")
    await prefs.set_pref(strict, "required_score", "-5")
    await prefs.set_pref(listed, "score", "GTUBE 50")  # whitelist_from is worth -100
    try:
        r = await spamd.check(spam, lenient)
        assert not r.spam and r.threshold == 2000.0
        assert (await spamd.check(ham, strict)).spam
        assert (await spamd.check(spam, listed)).spam
        await prefs.set_pref(listed, "whitelist_from", "sender@example.org")
        assert not (await spamd.check(spam, listed)).spam  # whitelisted sender
        assert (await spamd.check(spam, f"other@{dom}")).spam
        await prefs.set_pref(listed, "blacklist_from", "sender@example.org", add=True)
        await prefs.unset_pref(listed, "whitelist_from")
        assert (await spamd.check(ham, listed)).spam  # blacklisted sender
    finally:
        for user in (lenient, strict, listed):
            for row in await prefs.prefs(user):
                await prefs.unset_pref(user, row.preference)


async def test_domain_rows_apply_and_user_rows_win(spamd: SpamdClient, prefs: PrefsStore) -> None:
    dom = unique_domain()
    name = f"@~{dom}"
    spam = message(gtube())
    await prefs.set_pref(name, "required_score", "2000")
    try:
        assert not (await spamd.check(spam, f"anyone@{dom}")).spam
        await prefs.set_pref(f"picky@{dom}", "required_score", "5")
        r = await spamd.check(spam, f"picky@{dom}")
        assert r.spam and r.threshold == 5.0
        assert (await spamd.check(spam, "anyone@elsewhere.test")).spam
    finally:
        await prefs.unset_pref(name, "required_score")
        await prefs.unset_pref(f"picky@{dom}", "required_score")


async def test_down_and_hung_are_temporary() -> None:
    with pytest.raises(TemporaryError, match="cannot connect"):
        await SpamdClient([f"127.0.0.1:{closed_port()}"]).check(message(gtube()))
    async with fake_server(None) as hung:
        with pytest.raises(TemporaryError, match=r"no answer within 0\.3s"):
            await SpamdClient([hung.address], timeout_s=0.3).check(message(gtube()))


@pytest.mark.parametrize(("reply", "error"), [
    (b"SPAMD/1.0 76 Bad header line: x\r\n", PermanentError),
    (b"SPAMD/1.0 75 EX_TEMPFAIL\r\n", TemporaryError),
    (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", TemporaryError),  # no Spam:
    (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 10\r\nSpam: True ; 9 / 5\r\n\r\nAB", TemporaryError),
    (b"HTTP/1.0 200 OK\r\n\r\n", TemporaryError),
])
async def test_bad_answers(reply: bytes, error: type[Exception]) -> None:
    async with fake_server(reply) as fake:
        with pytest.raises(error):
            await SpamdClient([fake.address], timeout_s=5).check(b"Subject: x\n\nhi\n", "u@x.test")


async def test_failover(spamd_addr: tuple[str, int]) -> None:
    c = SpamdClient([f"127.0.0.1:{closed_port()}", f"{spamd_addr[0]}:{spamd_addr[1]}"])
    assert (await c.check(message(gtube()))).spam
