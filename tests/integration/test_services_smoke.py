"""Smoke tests: the real services started by contrib/test-services.sh behave as later tests need.

The protocol helpers here are deliberately minimal; the real clients live in mailguard.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped, unused-ignore]  # no stubs or py.typed
import dns.asyncresolver
import dns.resolver
import pytest

from tests.services import missing

TIMEOUT = 10.0


def eicar() -> bytes:
    """The EICAR test string, assembled at run time so this file is not a virus match."""
    parts = ["X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-", "ANTIVIRUS-", "TEST-FILE!$H+H*"]
    return "".join(parts).encode("ascii")


def gtube() -> str:
    """SpamAssassin's GTUBE string (scores 1000), assembled at run time."""
    return "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(body: str, subject: str = "test") -> bytes:
    text = (
        "From: Sender <sender@example.org>\r\n"
        "To: User <user@example.com>\r\n"
        f"Subject: {subject}\r\n"
        "Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
        "Message-ID: <smoke-test@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"{body}\r\n"
    )
    return text.encode("ascii")


# --- clamd ---------------------------------------------------------------------------------


async def clamd_instream(socket_path: str, data: bytes, chunk: int = 8192) -> str:
    """zINSTREAM over clamd's unix socket; returns the reply without the trailing NUL."""
    reader, writer = await asyncio.open_unix_connection(socket_path)
    try:
        writer.write(b"zINSTREAM\0")
        for start in range(0, len(data), chunk):
            piece = data[start : start + chunk]
            writer.write(struct.pack(">I", len(piece)) + piece)
        writer.write(struct.pack(">I", 0))
        await writer.drain()
        reply = await asyncio.wait_for(reader.readuntil(b"\0"), TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()
    return reply.rstrip(b"\0").decode()


async def clamd_command(socket_path: str, command: str) -> str:
    reader, writer = await asyncio.open_unix_connection(socket_path)
    try:
        writer.write(f"z{command}\0".encode())
        await writer.drain()
        reply = await asyncio.wait_for(reader.readuntil(b"\0"), TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()
    return reply.rstrip(b"\0").decode()


async def test_clamd_ping(clamd_socket: str) -> None:
    assert await clamd_command(clamd_socket, "PING") == "PONG"


async def test_clamd_finds_eicar(clamd_socket: str) -> None:
    reply = await clamd_instream(clamd_socket, eicar())
    assert reply.startswith("stream: "), reply
    assert reply.endswith(" FOUND"), reply


async def test_clamd_finds_eicar_in_mime_attachment(clamd_socket: str) -> None:
    encoded = base64.b64encode(eicar()).decode()
    mail = (
        "From: a@example.org\r\nTo: b@example.com\r\nSubject: attachment\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        "--XX\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        "--XX\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="eicar.com"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--XX--\r\n"
    ).encode("ascii")
    reply = await clamd_instream(clamd_socket, mail)
    assert reply.endswith(" FOUND"), reply


def clam_testfile() -> bytes:
    """ClamAV's harmless test executable (package clamav-testfiles), matched by a .hdb line."""
    path = Path("/usr/share/clamav-testfiles/clam.exe")
    if not path.is_file():
        missing(f"{path} missing (package clamav-testfiles)")
    return path.read_bytes()


async def test_clamd_finds_clam_testfile(clamd_socket: str) -> None:
    reply = await clamd_instream(clamd_socket, clam_testfile())
    assert reply.endswith(" FOUND"), reply


async def test_clamd_clean_text_is_ok(clamd_socket: str) -> None:
    reply = await clamd_instream(clamd_socket, message("Just a normal, clean message."))
    assert reply == "stream: OK"


# --- spamd ---------------------------------------------------------------------------------


async def spamd_check(addr: tuple[str, int], mail: bytes, user: str | None = None) -> str:
    """SPAMC/1.5 CHECK; returns the value of the `Spam:` header, e.g. 'True ; 1000.0 / 5.0'."""
    reader, writer = await asyncio.open_connection(*addr)
    try:
        head = f"CHECK SPAMC/1.5\r\nContent-length: {len(mail)}\r\n"
        if user is not None:
            head += f"User: {user}\r\n"
        writer.write(head.encode("ascii") + b"\r\n" + mail)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()
    lines = raw.decode("utf-8", "replace").split("\r\n")
    assert lines[0].startswith("SPAMD/1.") and lines[0].endswith(" EX_OK"), raw
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "spam":
            return value.strip()
    raise AssertionError(f"no Spam: header in spamd reply {raw!r}")


def is_spam(spam_header: str) -> bool:
    return spam_header.split(";", 1)[0].strip() == "True"


@contextlib.contextmanager
def userpref(prefs_path: str, username: str, preference: str, value: str) -> Iterator[None]:
    """Insert a row into spamd's SQL user preferences for the duration of the block."""
    con = sqlite3.connect(prefs_path)
    try:
        with con:
            cur = con.execute(
                "INSERT INTO userpref (username, preference, value) VALUES (?, ?, ?)",
                (username, preference, value),
            )
        try:
            yield
        finally:
            with con:
                con.execute("DELETE FROM userpref WHERE prefid = ?", (cur.lastrowid,))
    finally:
        con.close()


async def test_spamd_detects_gtube(spamd_addr: tuple[str, int]) -> None:
    verdict = await spamd_check(spamd_addr, message(gtube(), subject="gtube"))
    assert is_spam(verdict), verdict


async def test_spamd_ham_is_not_spam(spamd_addr: tuple[str, int]) -> None:
    body = "Hello,\r\n\r\nthe meeting is moved to Thursday at 10.\r\n\r\nRegards,\r\nSender"
    verdict = await spamd_check(spamd_addr, message(body, subject="meeting"))
    assert not is_spam(verdict), verdict


async def test_spamd_sql_userpref_flips_verdict(
    spamd_addr: tuple[str, int], spamd_prefs: str
) -> None:
    user = "user@example.com"
    mail = message(gtube(), subject="gtube for a lenient user")
    assert is_spam(await spamd_check(spamd_addr, mail, user=user))
    # GTUBE scores 1000: a required_score above that makes it ham for this user only.
    with userpref(spamd_prefs, user, "required_score", "2000"):
        verdict = await spamd_check(spamd_addr, mail, user=user)
        assert not is_spam(verdict), verdict
        assert verdict.endswith("/ 2000.0"), verdict
        other = await spamd_check(spamd_addr, mail, user="other@example.com")
        assert is_spam(other), other
    # Rows are read per message: without the row the default applies again.
    assert is_spam(await spamd_check(spamd_addr, mail, user=user))


# --- PostgreSQL ----------------------------------------------------------------------------


async def test_postgres_select_1(pg_url: str) -> None:
    # asyncpg wants a plain postgresql:// DSN, SQLAlchemy's URL names the driver.
    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=TIMEOUT)
    try:
        assert await conn.fetchval("select 1") == 1
        assert await conn.fetchval("select current_database()") == "mailguard_test"
    finally:
        await conn.close()


# --- rbldnsd -------------------------------------------------------------------------------


def resolver(dns_server: tuple[str, int]) -> dns.asyncresolver.Resolver:
    res = dns.asyncresolver.Resolver(configure=False)
    res.nameservers = [dns_server[0]]
    res.port = dns_server[1]
    res.timeout = 2.0
    res.lifetime = 5.0
    return res


def rbl_name(ip: str, zone: str) -> str:
    """Reversed-octet (IPv4) or reversed-nibble (IPv6) query name, RFC 5782."""
    pointer = ipaddress.ip_address(ip).reverse_pointer
    base = pointer.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa")
    return f"{base}.{zone}"


async def lookup(res: dns.asyncresolver.Resolver, name: str, rdtype: str) -> list[str]:
    """Answers as text; [] for NXDOMAIN or no answer of that type."""
    try:
        answer = await res.resolve(name, rdtype)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    if rdtype == "TXT":
        return [b"".join(r.strings).decode() for r in answer]
    return [r.to_text() for r in answer]


async def test_dns_rfc5782_test_points(dns_server: tuple[str, int]) -> None:
    res = resolver(dns_server)
    assert rbl_name("127.0.0.2", "bl.test") == "2.0.0.127.bl.test"
    assert await lookup(res, "2.0.0.127.bl.test", "A") == ["127.0.0.2"]
    assert await lookup(res, "2.0.0.127.bl.test", "TXT") == ["Listed in bl.test (127.0.0.2)"]
    assert await lookup(res, rbl_name("127.0.0.1", "bl.test"), "A") == []


async def test_dns_ranges_exclusions_and_codes(dns_server: tuple[str, int]) -> None:
    res = resolver(dns_server)
    assert await lookup(res, rbl_name("192.0.2.5", "bl.test"), "A") == ["127.0.0.3"]
    assert await lookup(res, rbl_name("192.0.2.5", "bl.test"), "TXT") == ["TEST-NET-1 block"]
    assert await lookup(res, rbl_name("192.0.2.1", "bl.test"), "A") == []  # exclusion
    assert await lookup(res, rbl_name("10.1.2.3", "bl.test"), "A") == ["127.0.0.4"]
    assert await lookup(res, rbl_name("10.1.2.3", "bl.test"), "TXT") == []  # A only
    assert await lookup(res, rbl_name("127.0.0.10", "bl.test"), "A") == ["127.255.255.254"]
    assert await lookup(res, rbl_name("127.0.0.11", "bl.test"), "A") == ["127.0.0.3"]
    assert await lookup(res, rbl_name("127.0.0.11", "bl2.test"), "A") == ["127.0.0.2"]
    assert await lookup(res, rbl_name("127.0.0.12", "bl2.test"), "A") == ["127.0.0.2"]
    assert await lookup(res, rbl_name("127.0.0.2", "bl2.test"), "A") == []


async def test_dns_ipv6_nibbles(dns_server: tuple[str, int]) -> None:
    res = resolver(dns_server)
    single = rbl_name("2001:db8:bad::1", "bl.test")
    assert single.startswith("1.0.0.0.") and single.endswith(".d.a.b.0.8.b.d.0.1.0.0.2.bl.test")
    assert await lookup(res, single, "A") == ["127.0.0.5"]
    assert await lookup(res, single, "TXT") == ["single host"]
    assert await lookup(res, rbl_name("2001:db8:ba0:1::9", "bl.test"), "A") == ["127.0.0.2"]
    assert await lookup(res, rbl_name("2001:db8:bad::2", "bl.test"), "A") == []


async def test_dns_domain_list(dns_server: tuple[str, int]) -> None:
    res = resolver(dns_server)
    assert await lookup(res, "bad.example.dbl.test", "A") != []
    assert await lookup(res, "www.bad.example.dbl.test", "A") == []
    assert await lookup(res, "spammy.example.dbl.test", "A") != []
    assert await lookup(res, "a.b.spammy.example.dbl.test", "A") != []
    assert await lookup(res, "good.example.dbl.test", "A") == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pass.spf.test", ["v=spf1 ip4:127.0.0.0/8 -all"]),
        ("fail.spf.test", ["v=spf1 -all"]),
        ("softfail.spf.test", ["v=spf1 ~all"]),
        ("neutral.spf.test", ["v=spf1 ?all"]),
        ("none.spf.test", []),
    ],
)
async def test_dns_spf_records(dns_server: tuple[str, int], name: str, expected: list[str]) -> None:
    assert await lookup(resolver(dns_server), name, "TXT") == expected
