"""SmtpAuth with the shared attempt count (store.auth_attempts), against an in-memory
stand-in: the store's count decides, a success gives its reservation back, a store that
cannot count fails closed (454, the backend not asked), old windows are purged."""

from __future__ import annotations

import asyncio

import pytest

from mailguard.auth.limiter import FailureCounter
from mailguard.clock import FrozenClock
from mailguard.errors import TemporaryError
from mailguard.frontend import replies
from mailguard.frontend.smtpauth import SmtpAuth
from mailguard.metrics import Metrics
from mailguard.settings.auth import AuthConfig
from mailguard.store.auth_attempts import AuthAttemptStore
from tests.unit.test_smtpauth import TableAuth, b64, run, session

IP = "192.0.2.9"


class MemoryAttempts:
    """AuthAttemptStore's contract in a dict; `down` makes every call fail."""

    def __init__(self) -> None:
        self.n: dict[tuple[str, int], int] = {}
        self.down = False
        self.purged: list[int] = []
        self.hang = False

    def _check(self) -> None:
        if self.down:
            raise TemporaryError("store: auth attempt reserve failed: connection refused")

    async def reserve(self, ip: str, window: int, limit: int) -> int | None:
        self._check()
        if self.hang:
            await asyncio.Event().wait()
        previous = self.n.get((ip, window - 1), 0)
        now = self.n.get((ip, window), 0)
        if previous + now >= limit:
            return None
        self.n[(ip, window)] = now + 1
        return previous + now + 1

    async def release(self, ip: str, window: int) -> None:
        self._check()
        self.n[(ip, window)] -= 1

    async def purge(self, before: int) -> int:
        self._check()
        self.purged.append(before)
        return 0


def make(attempts: MemoryAttempts) -> tuple[SmtpAuth, TableAuth, FrozenClock]:
    config = AuthConfig(enabled=True, failure_delay_s=0, max_failures_per_ip=3,
                        failure_window_s=600)
    backend, clock = TableAuth(), FrozenClock()
    auth = SmtpAuth(config, backend, clock, Metrics(), attempts)  # type: ignore[arg-type]
    return auth, backend, clock


def creds(password: str) -> str:
    return f"PLAIN {b64(chr(0) + 'alice' + chr(0) + password)}"


async def test_the_stores_count_decides() -> None:
    """Failures counted elsewhere (another worker or host) lock this process out too,
    although its own memory has seen none."""
    attempts = MemoryAttempts()
    auth, backend, clock = make(attempts)
    window = int(clock.now() // 600)
    attempts.n[(IP, window)] = 3  # three failures on other hosts
    assert await run(auth, session(IP), creds("s3cret")) == (replies.AUTH_TOO_MANY, True, [])
    assert backend.calls == []
    assert attempts.purged == [window - 1]


async def test_a_success_gives_its_reservation_back() -> None:
    attempts = MemoryAttempts()
    auth, _, clock = make(attempts)
    window = int(clock.now() // 600)
    assert (await run(auth, session(IP), creds("wrong")))[0] == replies.AUTH_FAILED
    for _ in range(5):
        assert (await run(auth, session(IP), creds("s3cret")))[0] == replies.AUTH_OK
    assert attempts.n[(IP, window)] == 1  # the failure only
    assert (await run(auth, session(IP), creds("wrong")))[0] == replies.AUTH_FAILED
    # the third failure reaches the limit: 421 and the connection closes
    assert await run(auth, session(IP), creds("wrong")) == (replies.AUTH_TOO_MANY, True, [])


async def test_a_store_that_cannot_count_fails_closed() -> None:
    attempts = MemoryAttempts()
    auth, backend, _ = make(attempts)
    attempts.down = True
    assert await run(auth, session(IP), creds("s3cret")) == (replies.AUTH_TEMPORARY, False,
                                                             [])
    assert backend.calls == []  # nothing verified without a count
    attempts.down = False
    assert (await run(auth, session(IP), creds("s3cret")))[0] == replies.AUTH_OK


async def test_the_memory_gate_still_answers_first() -> None:
    attempts = MemoryAttempts()
    auth, backend, clock = make(attempts)
    auth.failures = FailureCounter(3, 600)
    for _ in range(3):
        auth.failures.add(IP, clock.monotonic())
    assert await run(auth, session(IP), creds("s3cret")) == (replies.AUTH_TOO_MANY, True, [])
    assert backend.calls == [] and attempts.n == {}


async def test_a_session_cancelled_while_counting_leaves_no_reservation_in_memory() -> None:
    attempts = MemoryAttempts()
    auth, _, clock = make(attempts)
    attempts.hang = True
    for _ in range(5):  # more than the limit: each would leak an in-flight attempt
        task = asyncio.create_task(run(auth, session(IP), creds("s3cret")))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not auth.failures.blocked(IP, clock.monotonic())
    attempts.hang = False
    assert (await run(auth, session(IP), creds("s3cret")))[0] == replies.AUTH_OK


def test_the_stand_in_has_the_stores_methods() -> None:
    for name in ("reserve", "release", "purge"):
        assert callable(getattr(AuthAttemptStore, name))
