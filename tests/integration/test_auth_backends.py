"""Credential backends against the real things: a checkpassword program run with fd 3,
and the `mail_user` table on SQLite and the real PostgreSQL with argon2 hashes."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from mailguard.auth.checkpassword import CheckpasswordAuth
from mailguard.auth.users import UserTableAuth, hash_password
from mailguard.clock import FrozenClock
from mailguard.errors import TemporaryError
from mailguard.store.accounts import AccountStore
from mailguard.store.repo import Store

TOOLS = Path(__file__).resolve().parents[1] / "tools"
CHECKPW = str(TOOLS / "checkpassword_test.py")
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # tests only


def checkpw(tmp_path: Path, *args: str, timeout_s: float = 10.0) -> CheckpasswordAuth:
    env = {"PATH": "/usr/bin:/bin", "CHECKPW_RECORD": str(tmp_path / "seen")}
    return CheckpasswordAuth([CHECKPW, *args], FrozenClock(1_800_000_000.5),
                             timeout_s=timeout_s, env=env)


async def test_checkpassword_protocol(tmp_path: Path) -> None:
    auth = checkpw(tmp_path, "/bin/true")
    assert await auth.verify("good", "secret", client_ip="192.0.2.7") == "good"
    assert await auth.verify("good", "wrong", client_ip="192.0.2.7") is None
    assert await auth.verify("nobody", "secret", client_ip="192.0.2.7") is None
    # what the program read on fd 3: user, password, the clock's time; TCPREMOTEIP set
    assert (tmp_path / "seen").read_bytes().splitlines() == [
        b"good secret 1800000000 192.0.2.7",
        b"good wrong 1800000000 192.0.2.7",
        b"nobody secret 1800000000 192.0.2.7",
    ]
    # the program execs its arguments after a good login: their status counts
    assert await checkpw(tmp_path, "/bin/false").verify("good", "secret", client_ip="::1") \
        is None


async def test_checkpassword_temporary_failures(tmp_path: Path) -> None:
    with pytest.raises(TemporaryError, match="exited 111"):
        await checkpw(tmp_path).verify("tempfail", "x", client_ip="192.0.2.7")
    slow = checkpw(tmp_path, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(TemporaryError, match="timed out"):
        await slow.verify("slow", "x", client_ip="192.0.2.7")
    assert time.monotonic() - started < 5  # killed, not waited for
    missing = CheckpasswordAuth([str(tmp_path / "nope")], FrozenClock(), timeout_s=5)
    with pytest.raises(TemporaryError, match="cannot run"):
        await missing.verify("good", "secret", client_ip="192.0.2.7")


async def test_checkpassword_input_too_long_is_a_wrong_login(tmp_path: Path) -> None:
    auth = checkpw(tmp_path)
    assert await auth.verify("good", "x" * 600, client_ip="192.0.2.7") is None
    assert not (tmp_path / "seen").exists()  # not even run


@pytest.fixture
def accounts(store: Store, db_url: str) -> AccountStore:
    return AccountStore(store.db, db_url)


async def test_account_store(accounts: AccountStore) -> None:
    assert await accounts.add("Alice@Example.COM", None, 100.0) is True
    assert await accounts.add("alice@example.com", "h", 101.0) is False  # same, lower-cased
    assert await accounts.set_password("alice@example.com", "h1", 102.0) is False
    assert await accounts.set_password("bob@example.com", "h2", 103.0) is True
    assert [(a.address, a.password_hash, a.disabled) for a in await accounts.list()] == [
        ("alice@example.com", "h1", False), ("bob@example.com", "h2", False)]
    assert await accounts.set_disabled("BOB@example.com", True) is True
    bob = await accounts.get("bob@example.com")
    assert bob is not None and bob.disabled and bob.created_ts == 103.0
    assert await accounts.set_disabled("nobody@example.com", True) is False
    assert await accounts.delete("alice@example.com") is True
    assert await accounts.delete("alice@example.com") is False
    assert await accounts.get("alice@example.com") is None


async def test_user_table_auth(accounts: AccountStore) -> None:
    await accounts.set_password("alice@example.com", hash_password("s3cret pw", FAST), 1.0)
    await accounts.set_password("carol@example.com", hash_password("s3cret pw", FAST), 1.0)
    await accounts.set_disabled("carol@example.com", True)
    await accounts.add("dave@example.com", None, 1.0)
    auth = UserTableAuth(accounts, FAST)
    ip = "192.0.2.7"
    assert await auth.verify("Alice@Example.com", "s3cret pw", client_ip=ip) == (
        "alice@example.com")
    assert await auth.verify("alice@example.com", "wrong", client_ip=ip) is None
    assert await auth.verify("carol@example.com", "s3cret pw", client_ip=ip) is None  # disabled
    assert await auth.verify("dave@example.com", "", client_ip=ip) is None  # no password set
    assert await auth.verify("erin@example.com", "s3cret pw", client_ip=ip) is None  # unknown
    await accounts.set_password("alice@example.com", "not-an-argon2-hash", 2.0)
    assert await auth.verify("alice@example.com", "s3cret pw", client_ip=ip) is None


async def test_store_down_is_temporary() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: connections are refused
    url = f"postgresql://mailguard@127.0.0.1:{port}/mailguard"
    store = await Store.open(url, check_schema=False)
    try:
        auth = UserTableAuth(AccountStore(store.db, url), FAST)
        with pytest.raises(TemporaryError, match="reading mail user"):
            await auth.verify("a@example.com", "pw", client_ip="192.0.2.7")
    finally:
        await store.close()
