"""Per-user limits end to end inside one process: the real Conversation and pipeline,
a real store (SQLite file; the main walk also on the real PostgreSQL), a real Maildir
spool receiving both the users' mail and the admin alert, and a FrozenClock that walks
the windows and records every delay instead of sleeping."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailguard.body import Body, Message
from mailguard.checks.limits import build_limits
from mailguard.checks.relay import RelayCheck
from mailguard.checks.tarpit import build_tarpit
from mailguard.clock import FrozenClock
from mailguard.config import Config, load
from mailguard.context import Session
from mailguard.delivery.base import Delivered
from mailguard.delivery.maildir import MaildirDelivery, MaildirSpool
from mailguard.frontend.conversation import Conversation, Data
from mailguard.frontend.services import Services
from mailguard.metrics import Metrics
from mailguard.pipeline import Pipeline
from mailguard.policy import CheckPolicy, Mode
from mailguard.resources import Resources
from mailguard.store import migrate
from mailguard.store.alerts import AlertStore
from mailguard.store.repo import Store
from mailguard.store.users import UserStore
from mailguard.verdict import Reply
from tests.e2e.daemon_harness import run_cli
from tests.integration.test_users_store import users_url  # noqa: F401 - fixture

LIMITS = """
[server]
hostname = "mx.test"
local_domains = ["example.com"]
[limits]
windows = [
  { period_s = 3600, soft_messages = 3, hard_messages = 6, soft_rcpts = 8, hard_rcpts = 20 },
  { period_s = 86400, soft_messages = 20, hard_messages = 50 },
]
delay_min_s = 30
delay_max_s = 240
alert_to = "admin@example.com"
"""
HARD = b"451 4.7.1 too much mail from alice@example.com in the last hour, try again later"
SUSPENDED = (b"451 4.7.1 account alice@example.com is suspended for sending too much mail; "
             b"contact admin@example.com")


@dataclass
class Rig:
    clock: FrozenClock
    services: Services
    spool: Path
    url: str
    config_path: Path

    def conversation(self, *, relay: bool = True, ip: str = "127.0.0.1") -> Conversation:
        session = Session(ipaddress.ip_address(ip), 4321, self.clock, relay_client=relay,
                          session_id="t")
        return Conversation(self.services, session)

    async def send(self, sender: str = "alice@example.com",
                   rcpts: tuple[str, ...] = ("bob@example.org",),
                   subject: str = "hello", conv: Conversation | None = None) -> list[bytes]:
        """One transaction; the replies as bytes (stops at the first refusal)."""
        conv = conv or self.conversation()
        out = [str((await conv.mail(f"<{sender}>")).reply).encode()]
        if not out[0].startswith(b"250"):
            return out
        for r in rcpts:
            out.append(str((await conv.rcpt(f"<{r}>")).reply).encode())
        if not any(x.startswith(b"250") for x in out[1:]):
            return out
        message = f"From: {sender}\nSubject: {subject}\n\nhi\n".encode()
        step = await conv.data_end(Data(Body(message), len(message), False, 0))
        out.append(str(step.reply).encode())
        return out

    def alerts(self) -> list[bytes]:
        new = self.spool / "example.com" / "admin" / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--config", str(self.config_path), "--store", self.url)


async def rig(tmp_path: Path, url: str, toml: str, opened: list[Store], *,
              check_schema: bool = True) -> Rig:
    cfg_path = tmp_path / "mailguard.toml"
    cfg_path.write_text(toml)
    config: Config = load(cfg_path, {"store": {"url": url}})
    clock = FrozenClock()
    metrics = Metrics()
    store = await Store.open(url, check_schema=check_schema)
    opened.append(store)
    spool = tmp_path / "spool"
    delivery = MaildirDelivery(MaildirSpool(spool, clock), clock)
    res = Resources(config, clock, metrics, store, delivery)
    pipeline = Pipeline([
        (RelayCheck(res.is_local_domain), CheckPolicy(mode=Mode.ENFORCE)),
        build_tarpit(res, config.policy("tarpit")),
        build_limits(res, config.policy("limits")),
    ], metrics)
    services = Services.build(config, clock=clock, metrics=metrics, pipeline=pipeline,
                              delivery=delivery, on_accepted=res.on_accepted)
    return Rig(clock, services, spool, url, cfg_path)


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path}/mailguard.db"
    await migrate.upgrade(url)
    return url


@pytest.fixture
async def stores() -> AsyncIterator[list[Store]]:
    opened: list[Store] = []
    yield opened
    for s in opened:
        await s.close()


async def test_windows_soft_delays_hard_refusal_alert_once_and_window_frees(
        tmp_path: Path, users_url: str, stores: list[Store]) -> None:  # noqa: F811
    r = await rig(tmp_path, users_url, LIMITS, stores)
    # a small sender never notices anything
    for i in range(3):
        assert (await r.send(subject=f"msg {i}"))[-1].startswith(b"250 ok ")
    assert r.clock.sleeps == []
    # past the soft limit: each further message waits at MAIL, longer and longer
    for i in range(3, 6):
        assert (await r.send(subject=f"msg {i}"))[-1].startswith(b"250 ok ")
    assert r.clock.sleeps == [30, 135, 240]
    assert r.alerts() == []  # the alert threshold is the hard limit
    # past the hard limit: 451 at MAIL, and the admin hears about it exactly once
    assert await r.send() == [HARD]
    assert await r.send() == [HARD]
    r.clock.advance(600)
    assert await r.send() == [HARD]
    [alert] = r.alerts()
    assert b"Subject: [mailguard] outbound mail limited: alice@example.com\n" in alert
    assert b"Auto-Submitted: auto-generated\n" in alert
    assert b"last hour: 6 messages (soft 3 / hard 6)" in alert
    assert b"  example.org  6\n" in alert
    assert b"  - msg 5\n" in alert and b"  - msg 1\n" in alert and b"msg 0" not in alert
    # ... and the incident is recorded with the other alerts (the admin page lists it)
    reader = await Store.open(r.url)
    stores.append(reader)
    [incident] = await AlertStore(reader.db).list_recent(0)
    assert (incident.key, incident.kind, incident.sent) == (
        "outbound:alice@example.com", "outbound", 1)
    assert incident.message.startswith("alice@example.com: ") and not incident.open
    # the window frees: accepted again, without delay and without a new alert
    r.clock.advance(3600)
    sleeps = len(r.clock.sleeps)
    assert (await r.send())[-1].startswith(b"250 ok ")
    assert len(r.clock.sleeps) == sleeps and len(r.alerts()) == 1
    # other users are not affected by alice's counters
    assert (await r.send(sender="carol@example.com"))[-1].startswith(b"250 ok ")


async def test_recipient_limits_delay_and_refuse_at_rcpt(
        tmp_path: Path, sqlite_url: str, stores: list[Store]) -> None:
    r = await rig(tmp_path, sqlite_url, LIMITS, stores)
    rcpts = tuple(f"u{i}@d{i % 3}.test" for i in range(10))
    replies = await r.send(rcpts=rcpts)
    # recipients 9 and 10 of the hour pass the soft limit of 8: delayed, then accepted
    assert replies[-1].startswith(b"250 ok ") and r.clock.sleeps == [30, 49.1]
    replies = await r.send(rcpts=tuple(f"v{i}@e.test" for i in range(12)))
    assert replies[1:11] == [b"250 ok"] * 10  # up to the hard limit of 20
    assert replies[11] == (b"451 4.7.1 too much mail from alice@example.com in the last hour,"
                           b" try again later")
    assert replies[-1].startswith(b"250 ok ")  # the 10 accepted recipients are delivered
    assert len(r.alerts()) == 1


async def test_suspend_on_alert_then_cli_unsuspend(tmp_path: Path, sqlite_url: str,
                                                   stores: list[Store]) -> None:
    r = await rig(tmp_path, sqlite_url, LIMITS + "suspend_on_alert = true\n", stores)
    for _ in range(6):
        await r.send()
    # the crossing: the alert is written first, then the account is suspended
    assert await r.send() == [SUSPENDED]
    [alert] = r.alerts()
    assert b"outbound mail suspended: alice@example.com" in alert
    assert await r.send() == [SUSPENDED]
    # local mail of other users still flows; alice even to a local address does not
    assert (await r.send(sender="dave@example.com"))[-1].startswith(b"250 ok ")
    assert await r.send(rcpts=("postmaster@example.com",)) == [SUSPENDED]
    shown = r.cli("user", "show", "alice@example.com")
    assert shown.returncode == 0, shown.stderr
    assert "state:       suspended" in shown.stdout and "automatic: messages 7 > hard 6" in (
        shown.stdout)
    listed = r.cli("user", "list")
    assert listed.returncode == 0
    assert any(line.startswith("alice@example.com") and "suspended" in line
               for line in listed.stdout.splitlines())
    done = r.cli("user", "unsuspend", "alice@example.com")
    assert done.returncode == 0, done.stderr
    # no longer suspended, still over the hour's limit: refused, not suspended again
    assert await r.send() == [HARD]
    assert len(r.alerts()) == 1
    r.clock.advance(3600)
    assert (await r.send())[-1].startswith(b"250 ok ")
    assert r.cli("user", "unsuspend", "alice@example.com").returncode == 1
    assert r.cli("user", "show", "nobody@example.com").returncode == 1


async def test_admin_suspension_by_cli(tmp_path: Path, sqlite_url: str,
                                       stores: list[Store]) -> None:
    r = await rig(tmp_path, sqlite_url, LIMITS, stores)
    done = r.cli("user", "suspend", "alice@example.com", "--reason", "phished")
    assert done.returncode == 0, done.stderr
    assert await r.send() == [SUSPENDED]
    assert r.alerts() == []
    assert r.cli("user", "unsuspend", "alice@example.com").returncode == 0
    assert (await r.send())[-1].startswith(b"250 ok ")


async def test_panic_switch_stops_relaying_only(tmp_path: Path, sqlite_url: str,
                                                stores: list[Store]) -> None:
    r = await rig(tmp_path, sqlite_url, LIMITS, stores)
    on = r.cli("panic", "on")
    assert on.returncode == 0 and "ON" in on.stdout
    panic = b"451 4.7.1 relaying is stopped on this server for now, try again later"
    assert await r.send(sender="carol@example.com") == [b"250 ok", panic]
    # mail to local users still flows, from relay clients and strangers alike
    assert (await r.send(rcpts=("bob@example.com",)))[-1].startswith(b"250 ok ")
    stranger = r.conversation(relay=False, ip="192.0.2.7")
    replies = await r.send(sender="x@example.net", rcpts=("bob@example.com",), conv=stranger)
    assert replies[-1].startswith(b"250 ok ")
    assert r.cli("panic", "status").stdout.startswith("panic is ON")
    assert r.cli("panic", "off").returncode == 0
    assert (await r.send(sender="carol@example.com"))[-1].startswith(b"250 ok ")


async def test_log_mode_counts_and_alerts_but_never_delays_refuses_or_suspends(
        tmp_path: Path, sqlite_url: str, stores: list[Store]) -> None:
    toml = LIMITS + 'suspend_on_alert = true\n[checks.limits]\nmode = "log"\n'
    r = await rig(tmp_path, sqlite_url, toml, stores)
    for _ in range(9):
        assert (await r.send())[-1].startswith(b"250 ok ")
    assert r.clock.sleeps == []
    [alert] = r.alerts()
    assert b"outbound mail limited" in alert  # told, but not suspended
    assert r.cli("user", "show", "alice@example.com").stdout.count("suspended") == 0


async def test_store_failure_follows_on_error(tmp_path: Path, stores: list[Store]) -> None:
    # a database without the schema: every query fails → TemporaryError
    broken = f"sqlite+aiosqlite:///{tmp_path}/empty.db"

    async def make(toml: str, sub: str) -> Rig:
        (tmp_path / sub).mkdir()
        return await rig(tmp_path / sub, broken, toml, stores, check_schema=False)

    closed = await make(LIMITS, "closed")
    assert await closed.send() == [b"451 4.3.0 temporary failure, please try again later"]
    # strangers are not covered by the limits (apply_to = "relay"): no store I/O at all
    stranger = closed.conversation(relay=False, ip="192.0.2.7")
    replies = await closed.send(sender="x@example.net", rcpts=("b@example.com",), conv=stranger)
    assert replies[-1].startswith(b"250 ok ")
    opened = await make(LIMITS + '[checks.limits]\non_error = "open"\n', "open")
    assert (await opened.send())[-1].startswith(b"250 ok ")
    # the message is queued when its counting fails: the 250 stands, the error is counted
    errors = opened.services.metrics.value("mailguard_accepted_hook_errors_total", hook="limits")
    assert errors == 1


class RefusingQueue:
    """A hand-over that does not take the message: clamd down / qmail-queue failing (4xx)
    or a virus found (5xx)."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.calls = 0

    async def deliver(self, sender: str, rcpts: Sequence[str], message: Message, *,
                      authenticated: bool = False) -> Delivered:
        self.calls += 1
        return Delivered(False, self.reply)


async def test_only_mail_the_hand_over_accepted_is_counted(
        tmp_path: Path, sqlite_url: str, stores: list[Store]) -> None:
    r = await rig(tmp_path, sqlite_url, LIMITS, stores)
    users = UserStore(stores[0].db)
    accepting = r.services.queue_stage
    # a scanner outage: every message (and each retry) is tempfailed at the hand-over;
    # counted, the 4th would wait at MAIL and the 7th be refused (soft 3, hard 6)
    down = RefusingQueue(Reply(451, "temporary failure, please try again later", "4.3.0"))
    r.services.queue_stage = accepting.with_delivery(down)
    for _ in range(8):
        assert (await r.send())[-1] == b"451 4.3.0 temporary failure, please try again later"
    virus = RefusingQueue(Reply(554, "message refused: virus found", "5.7.1"))
    r.services.queue_stage = accepting.with_delivery(virus)
    assert (await r.send())[-1] == b"554 5.7.1 message refused: virus found"
    assert (down.calls, virus.calls) == (8, 1)
    assert r.clock.sleeps == [] and r.alerts() == []
    assert await users.detail("alice@example.com", r.clock.now(), [3600]) is None
    # accepted: counted once, with its recipients, their domains and its Subject
    r.services.queue_stage = accepting
    rcpts = ("bob@example.org", "eve@Example.NET", "ann@example.org")
    assert (await r.send(rcpts=rcpts, subject="quarterly report"))[-1].startswith(b"250 ok ")
    detail = await users.detail("alice@example.com", r.clock.now(), [3600, 86400])
    assert detail is not None
    assert [(c.messages, c.rcpts) for c in detail.counts] == [(1, 3), (1, 3)]
    assert dict(detail.top_domains) == {"example.org": 1, "example.net": 1}
    assert [subject for _, subject in detail.subjects] == ["quarterly report"]


async def test_per_connection_tarpit_walk(tmp_path: Path, sqlite_url: str,
                                          stores: list[Store]) -> None:
    r = await rig(tmp_path, sqlite_url, LIMITS + "[tarpit]\ncount = 2\ndelay_s = 7\n", stores)
    conv = r.conversation(relay=False, ip="192.0.2.7")
    await conv.mail("<x@example.net>")
    replies = [str((await conv.rcpt(f"<u{i}@example.com>")).reply) for i in range(4)]
    assert replies == ["250 ok"] * 4 and r.clock.sleeps == [7, 7]
    refused = str((await conv.rcpt("<u@foreign.test>")).reply)
    assert refused.startswith("553 ") and r.clock.sleeps == [7, 7]  # refusals do not wait
