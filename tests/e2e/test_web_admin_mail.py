"""A domain admin's "users may not override" switch, end to end: the real daemon with
real clamd and spamd, the real `mailguard web`. A user who turned her spam filtering
off gets GTUBE untouched; once her domain's admin decides for everyone on the web page,
the same message arrives tagged; when the admin lets users choose again, her choice
counts again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from email import message_from_bytes

import httpx
import pytest

from tests.e2e.daemon_harness import Client
from tests.e2e.web_harness import csrf
from tests.e2e.web_site import PASSWORD, Site, cli, run_site
from tests.scanner_helpers import gtube

Connect = Callable[..., Client]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, clamd_socket: str,
         spamd_addr: tuple[str, int]) -> Iterator[Site]:
    yield from run_site(tmp_path_factory.mktemp("weblock"), clamd_socket, spamd_addr)


def logged_in(c: httpx.Client, user: str) -> str:
    r = c.post("/login", data={"csrf": csrf(c.get("/login").text), "address": user,
                               "password": PASSWORD})
    assert r.status_code == 303, r.text
    return csrf(c.get("/").text)


def gtube_to(site: Site, connect: Connect, rcpt: str, subject: str) -> None:
    c = connect(site.daemon)
    assert c.reply().startswith(b"220 ")
    msg = (f"From: someone@sender.example\nTo: {rcpt}\nSubject: {subject}\n\n{gtube()}\n"
           ).replace("\n", "\r\n").encode()
    assert c.transaction("someone@sender.example", [rcpt], msg)[-1].startswith(b"250 ")
    c.cmd("QUIT")


def delivered(site: Site, subject: str) -> tuple[str, str]:
    """(Subject, X-Spam-Flag) of the message ann got with `subject` in its Subject."""
    for raw in site.daemon.spooled("example.com", "ann"):
        msg = message_from_bytes(raw)
        if subject in str(msg["Subject"]):
            return str(msg["Subject"]), str(msg["X-Spam-Flag"] or "")
    raise AssertionError(f"no message {subject!r} for ann")


def test_the_domain_decides_when_users_may_not_override(site: Site,
                                                        connect: Connect) -> None:
    assert cli(site.daemon, "role", "grant", "boss@example.com", "example.com"
               ).returncode == 0
    with site.client() as ann, site.client() as boss:
        token = logged_in(ann, "ann@example.com")
        r = ann.post("/settings", data={"csrf": token, "filtering": "off", "action": "",
                                        "sensitivity": "", "language": ""})
        # her own threshold (set while she may choose) would let GTUBE (~1000) through
        assert cli(site.daemon, "spampref", "set", "ann@example.com", "required_score",
                   "2000").returncode == 0
        assert r.status_code == 303
        gtube_to(site, connect, "ann@example.com", "first")
        assert delivered(site, "first") == ("first", "")  # her choice: not scanned
        btoken = logged_in(boss, "boss@example.com")
        locked = {"csrf": btoken, "filtering": "on", "action": "tag", "sensitivity": "",
                  "users_may_override": "no"}
        assert boss.post("/domains/example.com/defaults", data=locked).status_code == 303
        gtube_to(site, connect, "ann@example.com", "second")
        subject, flag = delivered(site, "second")  # spamd: the domain's threshold, not hers
        assert subject.startswith("[SPAM]") and flag == "YES"
        assert "Your domain's administrator sets these" in ann.get("/").text
        r = boss.post("/domains/example.com/defaults",
                      data={**locked, "users_may_override": "yes"})
        assert r.status_code == 303
        gtube_to(site, connect, "ann@example.com", "third")
        assert delivered(site, "third") == ("third", "")
