"""The pipeline runner: modes, failure policies, timeouts, deferred verdicts."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from mailguard.clock import FrozenClock
from mailguard.context import Session
from mailguard.errors import PermanentError, TemporaryError
from mailguard.metrics import Metrics
from mailguard.pipeline import ERROR_REPLY, Pipeline, enforce_deferred
from mailguard.policy import CheckPolicy, Mode, OnError
from mailguard.verdict import (
    CONTINUE,
    Action,
    Outcome,
    Reply,
    Stage,
    Verdict,
    reject,
    tempfail,
)

NO = Reply(554, "no", "5.7.1")


class Fixed:
    """A check that answers a fixed verdict, raises, or hangs."""

    def __init__(self, name: str, result: Verdict | Exception | None,
                 stages: frozenset[Stage] = frozenset({Stage.RCPT})) -> None:
        self.name = name
        self.stages = stages
        self.result = result
        self.calls = 0

    async def evaluate(self, stage: Stage, session: Session) -> Verdict:
        self.calls += 1
        if self.result is None:
            await asyncio.sleep(3600)
        if isinstance(self.result, Exception):
            raise self.result
        assert self.result is not None
        return self.result


def session() -> Session:
    return Session(ipaddress.ip_address("192.0.2.1"), 1234, FrozenClock())


async def test_first_enforced_refusal_wins_and_later_checks_do_not_run() -> None:
    a, b, c = Fixed("a", CONTINUE), Fixed("b", reject(NO, "listed")), Fixed("c", CONTINUE)
    p = Pipeline([(a, CheckPolicy()), (b, CheckPolicy()), (c, CheckPolicy())], Metrics())
    s = session()
    v = await p.run(Stage.RCPT, s)
    assert v.action is Action.REJECT and v.reply == NO
    assert (a.calls, b.calls, c.calls) == (1, 1, 0)
    assert [(r.check, r.outcome, r.enforced) for r in s.results] == [
        ("a", Outcome.PASS, True), ("b", Outcome.FAIL, True)]


async def test_log_mode_records_but_does_not_act_and_off_does_not_run() -> None:
    shadow, off = Fixed("shadow", reject(NO)), Fixed("off", reject(NO))
    metrics = Metrics()
    p = Pipeline([(shadow, CheckPolicy(mode=Mode.LOG)), (off, CheckPolicy(mode=Mode.OFF))],
                 metrics)
    s = session()
    assert await p.run(Stage.RCPT, s) == CONTINUE
    assert off.calls == 0
    [r] = s.results
    assert r.check == "shadow" and r.outcome is Outcome.FAIL and not r.enforced
    assert metrics.value("mailguard_check_runs_total", check="shadow", outcome="fail") == 1


async def test_checks_run_only_at_their_stages() -> None:
    helo_only = Fixed("h", reject(NO), frozenset({Stage.HELO}))
    p = Pipeline([(helo_only, CheckPolicy())], Metrics())
    assert await p.run(Stage.RCPT, session()) == CONTINUE
    assert (await p.run(Stage.HELO, session())).action is Action.REJECT


@pytest.mark.parametrize("error", [TemporaryError("dns down"), PermanentError("bad answer")])
async def test_error_tempfails_by_default_and_is_counted(error: Exception) -> None:
    metrics = Metrics()
    p = Pipeline([(Fixed("dnsbl", error), CheckPolicy())], metrics)
    s = session()
    v = await p.run(Stage.RCPT, s)
    assert v.action is Action.TEMPFAIL and v.reply == ERROR_REPLY
    [r] = s.results
    assert r.outcome is Outcome.ERROR and str(error) in r.detail
    assert metrics.value("mailguard_check_errors_total", check="dnsbl", policy="tempfail") == 1


async def test_error_with_open_policy_continues_but_is_recorded() -> None:
    metrics = Metrics()
    after = Fixed("after", CONTINUE)
    p = Pipeline([(Fixed("dnsbl", TemporaryError("timeout")), CheckPolicy(on_error=OnError.OPEN)),
                  (after, CheckPolicy())], metrics)
    s = session()
    assert await p.run(Stage.RCPT, s) == CONTINUE
    assert after.calls == 1
    assert s.results[0].outcome is Outcome.ERROR and s.results[0].action is Action.CONTINUE
    assert metrics.value("mailguard_check_errors_total", check="dnsbl", policy="open") == 1


async def test_timeout_is_owned_by_the_runner() -> None:
    p = Pipeline([(Fixed("slow", None), CheckPolicy(timeout_s=0.05))], Metrics())
    s = session()
    v = await asyncio.wait_for(p.run(Stage.RCPT, s), 5)
    assert v.action is Action.TEMPFAIL
    assert "timed out" in s.results[0].detail


async def test_an_error_in_log_mode_never_tempfails() -> None:
    p = Pipeline([(Fixed("x", TemporaryError("down")), CheckPolicy(mode=Mode.LOG))], Metrics())
    assert await p.run(Stage.RCPT, session()) == CONTINUE


async def test_deferred_verdicts_are_kept_for_rcpt() -> None:
    deferred = Verdict(Action.TEMPFAIL, Reply(451, "listed"), deferred=True)
    p = Pipeline([(Fixed("rbl", deferred, frozenset({Stage.CONNECT})), CheckPolicy())],
                 Metrics())
    s = session()
    assert await p.run(Stage.CONNECT, s) == CONTINUE
    assert enforce_deferred(s) == deferred
    assert enforce_deferred(session()) == CONTINUE


def test_reply_rendering() -> None:
    assert Reply(250, "ok").lines() == ["250 ok"]
    assert Reply(451, "try later", "4.7.1").lines() == ["451 4.7.1 try later"]
    assert Reply(250, "mx\nPIPELINING\n8BITMIME").lines() == [
        "250-mx", "250-PIPELINING", "250 8BITMIME"]
    assert str(Reply(221, "bye")) == "221 bye"
    assert tempfail(Reply(451, "x")).action is Action.TEMPFAIL
    assert Reply(451, "x").temporary and Reply(554, "x").permanent


def test_metrics_render_prometheus_text() -> None:
    m = Metrics()
    m.declare("mailguard_x_total", "counter", "X things")
    m.inc("mailguard_x_total", outcome="pass")
    m.inc("mailguard_x_total", 2, outcome='we"ird')
    text = m.render()
    assert "# TYPE mailguard_x_total counter" in text
    assert 'mailguard_x_total{outcome="pass"} 1' in text
    assert 'mailguard_x_total{outcome="we\\"ird"} 2' in text
