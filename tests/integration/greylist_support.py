"""Helpers of the greylisting integration tests: a migrated store on each backend, and
one RCPT through a check with a real Session and Transaction."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from mailguard.clock import FrozenClock
from mailguard.context import Session, Transaction
from mailguard.pipeline import Check
from mailguard.store import migrate
from mailguard.store.engine import create_engine
from mailguard.verdict import Stage, Verdict

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)]


async def _pg_admin(server_url: str, sql: str) -> None:
    engine = create_engine(server_url)
    try:
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(text(sql))
    finally:
        await engine.dispose()


@asynccontextmanager
async def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a migrated, empty database on the backend named by `request.param`."""
    name = ""
    server = ""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/mailguard.db"
    else:
        server = request.getfixturevalue("pg_url")
        name = f"mg_test_{uuid.uuid4().hex[:16]}"
        await _pg_admin(server, f'CREATE DATABASE "{name}"')
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        await migrate.upgrade(url)
        yield url
    finally:
        if name:
            await _pg_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def session(clock: FrozenClock, ip: str, sender: str, *, helo: str = "client.example",
            relay: bool = False, auth: str = "") -> Session:
    """A session of client `ip` with a transaction from `sender` (MAIL done)."""
    s = Session(ipaddress.ip_address(ip), 40000, clock, helo=helo, relay_client=relay,
                auth_user=auth)
    s.transaction = Transaction(sender)
    return s


async def rcpt(check: Check, s: Session, addr: str) -> Verdict:
    """Run the check at RCPT for `addr` on the session's transaction."""
    assert s.transaction is not None
    s.transaction.rcpt = addr
    return await check.evaluate(Stage.RCPT, s)
