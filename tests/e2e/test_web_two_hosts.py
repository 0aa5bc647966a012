"""Two `mailguard web` processes on one PostgreSQL store, as two web hosts behind a load
balancer: login throttling counts the failures seen by both, a session made on one is
served by the other, and a logout on one ends it on both."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.e2e.web_harness import Web, csrf, login
from tests.integration.databases import pg_admin


@pytest.fixture
def two_hosts(tmp_path: Path, pg_url: str) -> Iterator[tuple[Web, Web]]:
    name = f"mg_web_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg_admin(pg_url, f'CREATE DATABASE "{name}"'))
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Web(tmp_path / "a", store=url)
    b = Web(tmp_path / "b", store=url, users=())
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
        asyncio.run(pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.pg
def test_throttling_and_sessions_are_shared_by_two_web_hosts(
        two_hosts: tuple[Web, Web]) -> None:
    a, b = two_hosts
    with a.client() as ca, b.client() as cb:
        # max_failures_per_account = 3: two failures on host a, one on host b ...
        assert login(ca, password="wrong").status_code == 401
        assert login(cb, password="wrong").status_code == 401
        assert login(ca, password="wrong").status_code == 401
        # ... and the right password is refused on either host until the window passes
        assert login(cb).status_code == 429
        assert login(ca).status_code == 429
        # another account is not locked; its session from host a works on host b
        assert login(ca, "ann@example.com").status_code == 303
        cb.cookies.set("mg_session", ca.cookies.get("mg_session") or "")
        page = cb.get("/")
        assert page.status_code == 200 and "ann@example.com" in page.text
        # logging out on host b ends the session on host a too
        assert cb.post("/logout", data={"csrf": csrf(page.text)}).status_code == 303
        assert ca.get("/").status_code == 303
