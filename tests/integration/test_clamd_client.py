"""ClamdClient against the real clamd (test signature database) and misbehaving servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailguard.errors import TemporaryError
from mailguard.scanners.clamd import ClamdClient, Clean, Infected, TooLarge
from tests.scanner_helpers import (
    HAM_BODY,
    closed_port,
    eicar,
    fake_server,
    message,
    with_attachment,
    zipped,
)
from tests.services import TestServices, missing

CLAM_EXE = Path("/usr/share/clamav-testfiles/clam.exe")


def client(*servers: str, **kw: float) -> ClamdClient:
    opts = {"connect_timeout_s": 2.0, "scan_timeout_s": 10.0, **kw}
    return ClamdClient(servers, connect_timeout_s=opts["connect_timeout_s"],
                       scan_timeout_s=opts["scan_timeout_s"],
                       max_size_bytes=int(opts.get("max_size_bytes", 10 * 1024 * 1024)))


@pytest.mark.parametrize("payload", [
    pytest.param(eicar, id="plain"),
    pytest.param(lambda: zipped("eicar.com", eicar()), id="zipped"),
    pytest.param(lambda: with_attachment("eicar.com", eicar()), id="mime-base64"),
    pytest.param(lambda: with_attachment("eicar.zip", zipped("eicar.com", eicar())),
                 id="mime-zip"),
])
async def test_eicar_found(clamd_socket: str, payload: object) -> None:
    data = payload()  # type: ignore[operator]
    result = await client(f"unix:{clamd_socket}").scan(data)
    assert isinstance(result, Infected), result
    assert result.name.startswith("Eicar-Test-Signature"), result


@pytest.fixture
def clam_exe() -> bytes:
    if not CLAM_EXE.is_file():
        missing(f"{CLAM_EXE} missing (package clamav-testfiles)")
    return CLAM_EXE.read_bytes()


async def test_clam_testfile_found_over_tcp(services: TestServices, clamd_socket: str,
                                            clam_exe: bytes) -> None:
    if services.clamd_tcp is None:
        missing("clamd TCP not configured")
    host, port = services.clamd_tcp
    result = await client(f"{host}:{port}").scan(clam_exe)
    assert result == Infected("ClamAV-Test-File-Mailguard.UNOFFICIAL"), result


async def test_clean_message(clamd_socket: str) -> None:
    # bigger than one chunk, so the chunked framing is exercised
    big = message(HAM_BODY + "\n" + "lorem ipsum dolor sit amet\n" * 10_000)
    assert len(big) > 200_000
    c = ClamdClient([f"unix:{clamd_socket}"], chunk_bytes=8192)
    assert await c.scan(big) == Clean()
    await c.ping()
    assert "ClamAV" in await c.version()


async def test_size_limit_checked_before_sending() -> None:
    async with fake_server(b"stream: OK\0") as fake:
        c = client(fake.address, max_size_bytes=100)
        assert await c.scan(b"x" * 100) == Clean()  # exactly the limit is sent
        assert fake.connections == 1
        assert await c.scan(b"x" * 101) == TooLarge(101, 100)
        assert fake.connections == 1  # nothing sent for the big one


async def test_missing_socket_and_closed_port_are_temporary(tmp_path: Path) -> None:
    c = client(f"unix:{tmp_path}/nothing.sock", f"127.0.0.1:{closed_port()}")
    with pytest.raises(TemporaryError) as err:
        await c.scan(eicar())
    assert "nothing.sock" in str(err.value) and "cannot connect" in str(err.value)
    with pytest.raises(TemporaryError):
        await c.ping()


async def test_hung_server_times_out() -> None:
    async with fake_server(None) as fake:
        with pytest.raises(TemporaryError, match=r"no answer within 0\.3s"):
            await client(fake.address, scan_timeout_s=0.3).scan(eicar())
        assert fake.connections == 1
        assert bytes(fake.received).startswith(b"zINSTREAM\0")


@pytest.mark.parametrize("reply", [
    b"INSTREAM size limit exceeded. ERROR\0",
    b"stream: OK",  # closed before the NUL
    b"garbage\0",
    b"stream:  FOUND\0",
    b"",
])
async def test_error_and_garbage_replies_are_never_clean(reply: bytes) -> None:
    async with fake_server(reply, reply_after=4) as fake:
        with pytest.raises(TemporaryError):
            await client(fake.address).scan(b"hello")


async def test_failover_to_second_server(clamd_socket: str, tmp_path: Path) -> None:
    c = client(f"127.0.0.1:{closed_port()}", f"unix:{tmp_path}/gone.sock",
               f"unix:{clamd_socket}")
    result = await c.scan(eicar())
    assert isinstance(result, Infected)
    async with fake_server(None) as hung:  # a hung first server costs its timeout only
        c = client(hung.address, f"unix:{clamd_socket}", scan_timeout_s=0.3)
        assert await c.scan(b"clean text") == Clean()
