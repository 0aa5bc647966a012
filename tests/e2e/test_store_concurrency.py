"""Many simultaneous SMTP sessions on one store: no 4xx from lock contention.

Every RCPT reads the greylist (a triplet that passed before) and writes it (a triplet
seen for the first time: `delay_s = 0` lets it pass at once, so each first try is a write),
while the record writer appends `message_log` rows. On SQLite, before the store's
single-writer path, 16 such sessions got `database is locked` → 451 within seconds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.e2e.daemon_harness import Daemon, start_daemon
from tests.integration.databases import BACKENDS, empty_database

SESSIONS = 32
MESSAGES = 6  # per session, a new connection each

CONFIG = """
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test"
local_domains = ["example.com"]
max_connections_per_ip = 64
shutdown_grace_s = 5

[delivery]
method = "maildir"
spool = "{tmp}/spool"

[checks.greylist]
mode = "enforce"

[greylist]
key = "ip"
delay_s = 0
"""


@pytest.fixture(params=BACKENDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with empty_database(request, tmp_path / "mailguard.db") as url:
        if url.startswith("sqlite"):
            yield make_url(url).set(drivername="sqlite+aiosqlite").render_as_string(False)
        else:
            yield url


@pytest.fixture
def daemon(tmp_path: Path, store_url: str) -> Iterator[Daemon]:
    d = start_daemon(tmp_path, CONFIG, store=store_url)
    # drain the log while the load runs: a full stderr pipe would stall the daemon
    done = threading.Event()
    drain = threading.Thread(target=lambda: [d.read_log(0.1) for _ in iter(done.is_set, True)])
    drain.start()
    yield d
    done.set()
    drain.join()
    assert d.stop() == 0


async def reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if line[3:4] != b"-":
            return line


async def session(d: Daemon, n: int, codes: list[bytes]) -> None:
    source = f"127.0.2.{n + 1}"  # key = "ip": each session is its own client
    for i in range(MESSAGES):
        reader, writer = await asyncio.open_connection(d.host, d.port, local_addr=(source, 0))
        try:
            steps = [b"HELO load.test", f"MAIL FROM:<s{n}@sender.test>".encode(),
                     b"RCPT TO:<known@example.com>",  # passed before after the first message
                     f"RCPT TO:<new{n}-{i}@example.com>".encode(),  # a new triplet: a write
                     b"DATA"]
            codes.append((await reply(reader))[:3])
            for line in steps:
                writer.write(line + b"\r\n")
                codes.append((await reply(reader))[:3])
            writer.write(b"Subject: load\r\n\r\n" + b"x" * 2000 + b"\r\n.\r\n")
            codes.append((await reply(reader))[:3])
            writer.write(b"QUIT\r\n")
            await reply(reader)
        finally:
            writer.close()


async def test_concurrent_sessions_get_no_temporary_failures(daemon: Daemon) -> None:
    codes: list[bytes] = []
    await asyncio.gather(*(session(daemon, n, codes) for n in range(SESSIONS)))
    failures = sorted({c for c in codes if not c.startswith((b"2", b"3"))})
    assert failures == [], daemon.read_log()[-3000:]
    assert codes.count(b"354") == SESSIONS * MESSAGES
    delivered = list((daemon.spool / "example.com" / "known" / "new").iterdir())
    assert len(delivered) == SESSIONS * MESSAGES
    log = daemon.read_log(0.5)
    assert "database is locked" not in log
    assert log.count("result=accepted") == SESSIONS * MESSAGES
