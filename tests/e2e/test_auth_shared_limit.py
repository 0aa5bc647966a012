"""The AUTH lockout holds for several daemons on one store (issue 12): 20 sessions from one
address send AUTH PLAIN at once, split over two daemons (two worker processes, or two MX
hosts) on one SQLite file or one PostgreSQL database. Attempts are counted in the store
before the backend verifies them, so at most `max_failures_per_ip` of them reach
checkpassword overall, and the right password sent among wrong ones is refused once the
limit is used up. Before the count was shared, each daemon let its own 5 through."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.daemon_harness import Client, Daemon, start_daemon
from tests.e2e.shared_store import KINDS, shared_store
from tests.e2e.test_auth_checkpassword import CONFIG, EHLO, FAILED, OK, TOO_MANY
from tests.e2e.tls_support import plain

LIMIT = 5
TEMPORARY = b"454 4.7.0 temporary authentication failure\r\n"


def limited(config: str = CONFIG) -> str:
    return config.replace("failure_delay_s = 0",
                          f"failure_delay_s = 0\nmax_failures_per_ip = {LIMIT}")


def parallel_auth(daemons: list[Daemon], source: str, n: int = 20) -> list[bytes]:
    """`n` sessions, alternately on each daemon, all send AUTH before any answer is read;
    session 10 has the right password. The answers in session order."""
    clients = [Client(*daemons[i % len(daemons)].addresses[0], source=source)
               for i in range(n)]
    try:
        for c in clients:
            c.reply()
            assert c.cmd("EHLO client.test") == EHLO
        for i, c in enumerate(clients):
            c.send(f"AUTH PLAIN {plain('good', 'secret' if i == 10 else 'wrong')}\r\n"
                   .encode())
        return [c.reply() for c in clients]
    finally:
        for c in clients:
            c.close()


def login(d: Daemon, source: str) -> bytes:
    """One session from `source` logging in with the right password: the AUTH reply."""
    c = Client(*d.addresses[0], source=source)
    try:
        c.reply()
        c.cmd("EHLO client.test")
        return c.cmd(f"AUTH PLAIN {plain('good', 'secret')}")
    finally:
        c.close()


@pytest.mark.parametrize("kind", KINDS)
def test_parallel_attempts_over_two_daemons_share_one_limit(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest,
        make_daemon: list[Daemon], monkeypatch: pytest.MonkeyPatch) -> None:
    record = tmp_path / "checkpw.record"
    monkeypatch.setenv("CHECKPW_RECORD", str(record))
    with shared_store(kind, tmp_path, request) as url:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            make_daemon.append(start_daemon(tmp_path / name, limited(), store=url,
                                            upgrade=False))
        answers = parallel_auth(make_daemon, "127.0.0.56")
        assert set(answers) <= {OK, FAILED, TOO_MANY}, answers
        assert len([a for a in answers if a != TOO_MANY]) <= LIMIT, answers
        assert len(record.read_bytes().splitlines()) <= LIMIT  # the backend, both daemons
        # the address stays locked on both daemons, the right password included
        for d in make_daemon:
            assert login(d, "127.0.0.56") == TOO_MANY
        assert len(record.read_bytes().splitlines()) <= LIMIT
        # another address is not locked, and a success gives its reservation back
        for _ in range(LIMIT + 2):
            for d in make_daemon:
                assert login(d, "127.0.0.57") == OK


def test_two_workers_share_one_limit(tmp_path: Path, make_daemon: list[Daemon],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with `[server] workers = 2`: the workers' counts add up in the store."""
    record = tmp_path / "checkpw.record"
    monkeypatch.setenv("CHECKPW_RECORD", str(record))
    config = limited().replace("shutdown_grace_s = 5", "shutdown_grace_s = 5\nworkers = 2\n"
                               "max_connections_per_ip = 64")
    d = start_daemon(tmp_path, config)
    make_daemon.append(d)
    answers = parallel_auth([d], "127.0.0.58", n=30)
    assert set(answers) <= {OK, FAILED, TOO_MANY}, answers
    assert len([a for a in answers if a != TOO_MANY]) <= LIMIT, answers
    assert len(record.read_bytes().splitlines()) <= LIMIT


def test_a_store_that_cannot_count_refuses_with_454(
        tmp_path: Path, make_daemon: list[Daemon], monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: when the attempt cannot be counted the backend is not asked."""
    record = tmp_path / "checkpw.record"
    monkeypatch.setenv("CHECKPW_RECORD", str(record))
    d = start_daemon(tmp_path, limited())
    make_daemon.append(d)
    db = tmp_path / "mailguard.db"
    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(db) as conn:  # the table is gone: every count fails
        conn.execute("DROP TABLE auth_attempt")
    assert login(d, "127.0.0.59") == TEMPORARY
    assert not record.exists()
    d.wait_log("result=tempfail")
