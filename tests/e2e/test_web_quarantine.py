"""The quarantine page as its users meet it: the real daemon with real clamd and spamd
keeps spam for a user who chose "quarantine" on the web page; the user sees it (subject,
sender, score, size), releases it once (delivered once), releases another and allows its
sender, deletes a third. Nobody reaches another user's entries by editing ids; a domain
admin sees the domain's; a user cannot release a virus, an admin can."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from email import message_from_bytes

import httpx
import pytest

from mailguard.store.prefs import PrefsStore
from mailguard.store.repo import Store
from tests.e2e.daemon_harness import Client, Daemon
from tests.e2e.web_site import PASSWORD, Site, cli, run_site, store_url
from tests.scanner_helpers import eicar, gtube

Connect = Callable[..., Client]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, clamd_socket: str,
         spamd_addr: tuple[str, int]) -> Iterator[Site]:
    yield from run_site(tmp_path_factory.mktemp("webq"), clamd_socket, spamd_addr)


def csrf(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


def login(c: httpx.Client, user: str) -> str:
    token = csrf(c.get("/login").text)
    r = c.post("/login", data={"csrf": token, "address": user, "password": PASSWORD})
    assert r.status_code == 303, r.text
    return csrf(c.get("/").text)


def send(site: Site, connect: Connect, rcpt: str, subject: str, body: str, *,
         sender: str = "Offers <deals@spam.example>") -> bytes:
    c = connect(site.daemon)
    assert c.reply().startswith(b"220 ")
    msg = (f"From: {sender}\nTo: {rcpt}\nSubject: {subject}\n\n{body}\n").replace(
        "\n", "\r\n").encode()
    last = c.transaction("deals@spam.example", [rcpt], msg)[-1]
    c.cmd("QUIT")
    return last


def entry_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<li class="message" id="m(\d+)"', page)]


def mail_for(d: Daemon, local: str) -> list[bytes]:
    """Delivered to local@example.com, without the notices mailguard sent from <>."""
    return [m for m in d.spooled("example.com", local)
            if not m.startswith(b"Return-Path: <>")]


def allow_list(d: Daemon, user: str) -> list[str]:
    async def read() -> list[str]:
        s = await Store.open(store_url(d))
        try:
            return [r.value for r in await PrefsStore(s.db).prefs(user)
                    if r.preference == "whitelist_from"]
        finally:
            await s.close()
    return asyncio.run(read())


def test_user_quarantines_releases_once_allows_and_deletes(site: Site,
                                                           connect: Connect) -> None:
    d = site.daemon
    with site.client() as c:
        token = login(c, "joe@example.com")
        page = c.get("/").text
        assert 'value="quarantine"' in page  # offered: this server keeps a quarantine
        r = c.post("/settings", data={"csrf": token, "filtering": "on",
                                      "sensitivity": "strict", "action": "quarantine",
                                      "language": "", "custom_score": ""})
        assert r.status_code == 303
        for subject in ("first <b>offer</b>", "second offer", "third offer"):
            assert send(site, connect, "joe@example.com", subject, gtube()).startswith(
                b"250 ")
        assert d.spooled("example.com", "joe") == []  # held, not delivered
        page = c.get("/quarantine").text
        assert "3 messages held" in page
        assert "first &lt;b&gt;offer&lt;/b&gt;" in page and "<b>offer</b>" not in page
        assert "Offers &lt;deals@spam.example&gt;" in page
        third, second, first = entry_ids(page)  # newest first
        # release: delivered once; the same button again finds nothing
        r = c.post(f"/quarantine/{first}/release", data={"csrf": token})
        assert r.headers["location"] == "/quarantine?done=released"
        assert "on its way to your mailbox" in c.get(r.headers["location"]).text
        r = c.post(f"/quarantine/{first}/release", data={"csrf": token})
        assert r.headers["location"] == "/quarantine?done=gone"
        [delivered] = d.spooled("example.com", "joe")
        assert message_from_bytes(delivered)["Subject"] == "first <b>offer</b>"
        assert message_from_bytes(delivered)["X-MailGuard-Released"].startswith(
            "by joe@example.com; ")
        # release and allow the sender; delete the third
        r = c.post(f"/quarantine/{second}/release-allow", data={"csrf": token})
        assert r.headers["location"] == "/quarantine?done=allowed"
        assert allow_list(d, "joe@example.com") == ["deals@spam.example"]
        assert len(d.spooled("example.com", "joe")) == 2
        r = c.post(f"/quarantine/{third}/delete", data={"csrf": token})
        assert r.headers["location"] == "/quarantine?done=deleted"
        assert entry_ids(c.get("/quarantine").text) == []
        assert len(d.spooled("example.com", "joe")) == 2
        # forged CSRF: refused
        assert c.post(f"/quarantine/{first}/delete", data={"csrf": "x"}).status_code == 403


def test_nobody_reaches_anothers_quarantine_virus_is_admin_only(site: Site,
                                                               connect: Connect) -> None:
    d = site.daemon
    with site.client() as ann:
        ann_token = login(ann, "ann@example.com")
        ann.post("/settings", data={"csrf": ann_token, "filtering": "on", "sensitivity": "",
                                    "action": "quarantine", "language": "",
                                    "custom_score": ""})
        assert send(site, connect, "ann@example.com", "ann's spam", gtube()).startswith(b"250")
        assert send(site, connect, "ann@example.com", "bill", eicar().decode()).startswith(
            b"554")
        page = ann.get("/quarantine").text
        spam_id, = [int(i) for i in re.findall(r'id="m(\d+)"', page)
                    if f'/quarantine/{i}/release"' in page]
        assert "only be released by your administrator" in page
        virus_id = max(entry_ids(page))
        assert virus_id != spam_id
        # the user cannot release the virus copy, even by posting the URL
        r = ann.post(f"/quarantine/{virus_id}/release", data={"csrf": ann_token})
        assert r.headers["location"] == "/quarantine?done=gone"
    with site.client() as joe:
        joe_token = login(joe, "joe@example.com")
        for what in ("release", "release-allow", "delete"):
            r = joe.post(f"/quarantine/{spam_id}/{what}", data={"csrf": joe_token})
            assert r.headers["location"] == "/quarantine?done=gone", what
        assert str(spam_id) not in "".join(map(str, entry_ids(joe.get("/quarantine").text)))
        # not an admin: the domain and global views are refused
        assert joe.get("/quarantine?domain=example.com").status_code == 403
        assert joe.get("/quarantine?all=1").status_code == 403
        r = joe.post(f"/quarantine/{spam_id}/delete?domain=example.com",
                     data={"csrf": joe_token})
        assert r.status_code == 403
    assert mail_for(d, "ann") == []  # (ann's virus warning is there, from <>)
    # a domain admin of example.com sees both and may release the virus copy
    res = cli(d, "role", "grant", "boss@example.com", "example.com")
    if res.returncode != 0:  # `mailguard role` comes with the admin pages
        pytest.fail(f"mailguard role grant failed: {res.stderr}")
    with site.client() as boss:
        token = login(boss, "boss@example.com")
        page = boss.get("/quarantine?domain=example.com").text
        assert {spam_id, virus_id} <= set(entry_ids(page))
        assert "for ann@example.com" in page
        assert boss.get("/quarantine?domain=other.test").status_code == 403
        r = boss.post(f"/quarantine/{virus_id}/release?domain=example.com",
                      data={"csrf": token})
        assert r.headers["location"] == "/quarantine?domain=example.com&done=released"
    [released] = mail_for(d, "ann")
    assert message_from_bytes(released)["Subject"] == "bill"
    assert b"EICAR" in released
