"""Test material for the scanners: EICAR/GTUBE built at run time (so no file in the tree is
itself a signature match), messages, and misbehaving local servers (hung, scripted)."""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import socket
import zipfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from mailguard.body import Message
from mailguard.checks.spam_scan import PrefsSource, SpamdCheck
from mailguard.checks.virus_scan import ClamdCheck
from mailguard.clock import Clock
from mailguard.context import Session, Transaction
from mailguard.delivery.base import Delivered, Delivery
from mailguard.metrics import Metrics
from mailguard.pipeline import Check, Pipeline
from mailguard.policy import CheckPolicy
from mailguard.registry import scanner_policy
from mailguard.scanners.clamd import ClamdClient
from mailguard.scanners.spamd import SpamdClient
from mailguard.scanning.notify_api import VirusNotifier
from mailguard.scanning.stage import QueueStage
from mailguard.settings.scan import ClamdConfig, SpamConfig, SpamdConfig


def eicar() -> bytes:
    parts = ["X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-", "ANTIVIRUS-", "TEST-FILE!$H+H*"]
    return "".join(parts).encode("ascii")


def gtube() -> str:
    return "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(body: str, *, subject: str = "test", headers: str = "",
            to: str = "user@example.com") -> bytes:
    """A plain message with LF line ends (qmail's stored form)."""
    text = (
        "Received: from client.test (127.0.0.1) by mx.test with SMTP; "
        "26 Nov 2026 12:00:00 -0000\n"
        f"{headers}"
        "From: Sender <sender@example.org>\n"
        f"To: <{to}>\n"
        f"Subject: {subject}\n"
        "Date: Thu, 26 Nov 2026 12:00:00 +0000\n"
        "Message-ID: <scan-test@example.org>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        f"{body}\n"
    )
    return text.encode("ascii")


HAM_BODY = "Hello,\n\nthe meeting is moved to Thursday at 10.\n\nRegards,\nSender"


def with_attachment(name: str, payload: bytes) -> bytes:
    encoded = base64.encodebytes(payload).decode("ascii")
    return (
        "From: a@example.org\nTo: b@example.com\nSubject: attachment\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="XX"\n\n'
        "--XX\nContent-Type: text/plain\n\nsee attachment\n"
        "--XX\nContent-Type: application/octet-stream\n"
        f'Content-Disposition: attachment; filename="{name}"\n'
        f"Content-Transfer-Encoding: base64\n\n{encoded}--XX--\n"
    ).encode("ascii")


def zipped(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, payload)
    return buf.getvalue()


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FakeServer:
    """A local TCP server: `reply` is sent after `reply_after` bytes arrived (None: never
    answers — a hung scanner). Records the connections and bytes it got."""

    reply: bytes | None
    reply_after: int = 1
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)
    address: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.connections += 1
        got = 0
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                self.received += chunk
                got += len(chunk)
                if self.reply is not None and got >= self.reply_after:
                    writer.write(self.reply)
                    await writer.drain()
                    break
            if self.reply is None:
                await asyncio.Event().wait()  # hung: hold the connection until closed
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def fake_server(reply: bytes | None, reply_after: int = 1) -> AsyncIterator[FakeServer]:
    fake = FakeServer(reply, reply_after)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fake.address = f"127.0.0.1:{port}"
    try:
        yield fake
    finally:
        server.close()
        for task in fake.tasks:
            task.cancel()
        await asyncio.gather(*fake.tasks, return_exceptions=True)
        await server.wait_closed()


def spamd_prefs_has_mailguard_schema(path: str) -> bool:
    """True when contrib/test-services.sh created the spamd prefs database with mailguard's
    schema (an older start made a bare userpref table: restart the services)."""
    import sqlite3  # noqa: PLC0415

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = con.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='mail_domain'").fetchone()
    finally:
        con.close()
    return row is not None


def require_mailguard_prefs(path: str) -> None:

    from tests.services import missing  # noqa: PLC0415

    if spamd_prefs_has_mailguard_schema(path):
        return
    problem = (f"{path} has no mailguard schema: restart the test services "
               "(contrib/test-services.sh restart)")
    missing(problem)


# --- the QUEUE stage below the SMTP layer ------------------------------------------------


@dataclass(frozen=True)
class ScanSetup:
    """The scanners a test puts in front of a delivery (None = not configured)."""

    clamd: ClamdClient | None = None
    spamd: SpamdClient | None = None
    prefs: PrefsSource | None = None
    clamd_cfg: ClamdConfig = field(default_factory=ClamdConfig)
    spamd_cfg: SpamdConfig = field(default_factory=SpamdConfig)
    spam_cfg: SpamConfig = field(default_factory=SpamConfig)
    deadline_s: float = 120.0


class Scanning:
    """The daemon's QUEUE stage (its clamd and spamd checks as the registry builds them,
    with the same policies) in front of `inner`; `deliver` runs one message through it
    as a session would, and keeps the transaction for the test to look at."""

    def __init__(self, inner: Delivery, setup: ScanSetup, *, clock: Clock, metrics: Metrics,
                 notifier: VirusNotifier | None = None) -> None:
        checks: list[tuple[Check, CheckPolicy]] = []
        if setup.clamd is not None:
            policy = scanner_policy(True, setup.clamd_cfg.on_error, setup.deadline_s)
            checks.append((ClamdCheck(setup.clamd, setup.clamd_cfg, metrics), policy))
        if setup.spamd is not None:
            assert setup.prefs is not None
            policy = scanner_policy(True, setup.spamd_cfg.on_error, setup.deadline_s)
            checks.append((SpamdCheck(setup.spamd, setup.prefs, setup.spamd_cfg,
                                      setup.spam_cfg, metrics), policy))
        self.clock = clock
        self.stage = QueueStage(Pipeline(checks, metrics), inner, clock=clock,
                                metrics=metrics, deadline_s=setup.deadline_s,
                                notifier=notifier)
        self.tx: Transaction | None = None

    async def deliver(self, sender: str, rcpts: Sequence[str], message: Message, *,
                      authenticated: bool = False) -> Delivered:
        session = Session(ipaddress.ip_address("192.0.2.1"), 25000, self.clock,
                          auth_user="user@example.test" if authenticated else "",
                          session_id="test")
        self.tx = Transaction(sender, rcpts=list(rcpts), size=len(message))
        session.transaction = self.tx
        return await self.stage.process(session, self.tx, message)
