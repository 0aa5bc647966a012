"""Mail-flow graphs and usage tables from real traffic: messages of mixed kinds go
through the real daemon (clamd, spamd, quarantine), then the server admin's dashboard,
a domain admin's, a user's own view and the usage CSV show exactly those counts."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import smtplib
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.web_site import PASSWORD, Site, cli, run_site
from tests.scanner_helpers import eicar, gtube


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, clamd_socket: str,
         spamd_addr: tuple[str, int]) -> Iterator[Site]:
    yield from run_site(tmp_path_factory.mktemp("webstats"), clamd_socket, spamd_addr)


def login(c: httpx.Client, user: str) -> None:
    m = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
    assert m
    r = c.post("/login", data={"csrf": m.group(1), "address": user, "password": PASSWORD})
    assert r.status_code == 303


def totals(page: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(
        r"<tr><td>(\w+)</td><td class=\"num\">(\d+)</td><td class=\"num\">", page)}


def send(site: Site, rcpt: str, body: str, sender: str = "a@example.org") -> None:
    d = site.daemon
    with smtplib.SMTP(d.host, d.port, timeout=60) as smtp:
        msg = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: t\r\n\r\n{body}\r\n"
        with contextlib.suppress(smtplib.SMTPDataError, smtplib.SMTPRecipientsRefused):
            smtp.sendmail(sender, [rcpt], msg)  # the refused ones are counted too


def test_dashboard_usage_and_csv_count_what_was_sent(site: Site) -> None:
    d = site.daemon
    assert cli(d, "role", "grant", "boss@example.com", "*").returncode == 0
    assert cli(d, "role", "grant", "ann@example.com", "other.test").returncode == 0
    assert cli(d, "domain", "spam", "on", "ann@example.com", "--action",
               "quarantine").returncode == 0
    for _ in range(3):
        send(site, "joe@example.com", "hello")
    send(site, "joe@other.test", "hello")
    for _ in range(2):
        send(site, "ann@example.com", gtube())
    send(site, "joe@example.com", eicar().decode())
    send(site, "someone@far.example", "relay me")  # refused at RCPT: not ours
    time.sleep(1.5)  # the daemon's record writer batches (well under a second)
    with site.client() as c:
        login(c, "boss@example.com")
        page = c.get("/stats?view=day")
        assert page.status_code == 200
        assert '<meta http-equiv="refresh" content="300">' in page.text
        assert "<svg" in page.text and "<script" not in page.text
        assert totals(page.text) == {"delivered": 4, "quarantined": 2, "deleted": 0,
                                     "rejected": 2, "deferred": 0, "aborted": 0}
        assert re.search(r"<td>rejected</td><td>virus</td><td class=\"num\">1</td>", page.text)
        assert re.search(r"<td>rejected</td><td>relay</td><td class=\"num\">1</td>", page.text)
        for view in ("week", "month", "year"):
            assert sum(totals(c.get(f"/stats?view={view}").text).values()) == 8, view
        one = totals(c.get("/stats?view=day&domain=other.test").text)
        assert one["delivered"] == 1 and sum(one.values()) == 1
        usage = c.get("/stats/usage?order=messages")
        assert usage.status_code == 200 and "joe@example.com" in usage.text
        rows = list(csv.DictReader(io.StringIO(c.get("/stats/usage.csv").text)))
        by = {(r["kind"], r["key"]): r for r in rows}
        assert by[("rcpt", "joe@example.com")]["messages"] == "3"
        assert by[("rcpt", "joe@example.com")]["caught"] == "1"  # the virus
        assert by[("rcpt", "ann@example.com")]["caught"] == "2"
        assert by[("sender", "a@example.org")]["messages"] == "6"  # quarantined: accepted
        assert by[("domain", "example.com")]["messages"] == "5"
        # one user's own view, from the usage table's link
        assert '<a href="/stats?user=joe%40example.com">' in usage.text
        assert "3 messages accepted for you" in c.get("/stats?user=joe@example.com").text
    with site.client() as c:  # a domain admin: their domain only
        login(c, "ann@example.com")
        assert sum(totals(c.get("/stats").text).values()) == 1
        assert c.get("/stats?domain=example.com").status_code == 403
        assert c.get("/stats/usage?domain=example.com").status_code == 403
        assert c.get("/stats?user=joe@example.com").status_code == 403
        assert c.get("/stats?user=joe@other.test").status_code == 200
        rows = list(csv.DictReader(io.StringIO(c.get("/stats/usage.csv").text)))
        assert {r["key"] for r in rows if r["kind"] == "rcpt"} == {"joe@other.test"}
    with site.client() as c:  # a mail user: their own mail
        login(c, "joe@example.com")
        mine = c.get("/stats").text
        assert "3 messages accepted for you; 1 caught for you" in mine
        assert c.get("/stats/usage").status_code == 403
        assert c.get("/stats?domain=example.com").status_code == 403
