"""The pipeline runner: runs the checks of a stage in order, owns their timeouts, their
failure policy (tempfail by default, open only when configured) and their mode
(off | log | enforce). Checks never see each other's errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from mailguard.context import Session
from mailguard.errors import PermanentError, TemporaryError
from mailguard.metrics import Metrics
from mailguard.policy import CheckPolicy, Mode, OnError
from mailguard.verdict import (
    CONTINUE,
    Action,
    CheckResult,
    Outcome,
    Reply,
    Stage,
    Verdict,
    tempfail,
)

log = logging.getLogger("mailguard.pipeline")


class Check(Protocol):
    """A policy check. `evaluate` returns a Verdict or raises TemporaryError/PermanentError.

    A check may also have an `error_reply` attribute (a Reply): what the client gets when
    the check fails and its policy is tempfail (default: ERROR_REPLY)."""

    name: str
    stages: frozenset[Stage]

    async def evaluate(self, stage: Stage, session: Session) -> Verdict: ...


CHECK_SECONDS = "mailguard_check_duration_seconds"
ERROR_REPLY = Reply(451, "temporary failure, please try again later", "4.3.0")


def declare_metrics(metrics: Metrics) -> None:
    metrics.declare("mailguard_check_runs_total", "counter", "Check runs by check and outcome")
    metrics.declare("mailguard_check_errors_total", "counter", "Check errors by check and policy")
    metrics.declare(CHECK_SECONDS, "histogram", "Check latency by check (errors, timeouts too)")


class Pipeline:
    """Ordered checks with their policies."""

    def __init__(self, checks: Sequence[tuple[Check, CheckPolicy]], metrics: Metrics) -> None:
        self._checks = [(c, p) for c, p in checks if p.mode is not Mode.OFF]
        self._stages = frozenset(s for c, _ in self._checks for s in c.stages)
        self._metrics = metrics
        declare_metrics(metrics)

    @property
    def names(self) -> list[str]:
        return [c.name for c, _ in self._checks]

    def runs(self, stage: Stage) -> bool:
        """Whether any check (not off) runs at `stage`."""
        return stage in self._stages

    async def run(self, stage: Stage, session: Session) -> Verdict:
        """Run the stage's checks; the first enforced verdict that stops wins. Deferred
        verdicts are kept on the session and enforced by `enforce_deferred` at RCPT."""
        for check, policy in self._checks:
            if stage not in check.stages:
                continue
            verdict = await self._run_one(check, policy, stage, session)
            if not verdict.stops:
                continue
            if verdict.deferred:
                session.deferred.append(verdict)
                continue
            return verdict
        return CONTINUE

    async def _run_one(
        self, check: Check, policy: CheckPolicy, stage: Stage, session: Session
    ) -> Verdict:
        clock = session.clock
        started = clock.monotonic()
        enforced = policy.mode is Mode.ENFORCE
        try:
            async with asyncio.timeout(policy.timeout_s):
                verdict = await check.evaluate(stage, session)
        except (TemporaryError, PermanentError, TimeoutError) as exc:
            detail = str(exc) or f"timed out after {policy.timeout_s:g}s"
            return self._error(check, policy, stage, session, detail=detail, started=started)
        except Exception as exc:  # a bug in the check: its failure policy still applies
            log.exception("check=%s stage=%s unexpected error", check.name, stage)
            detail = f"internal error: {type(exc).__name__}"
            return self._error(check, policy, stage, session, detail=detail, started=started)
        outcome = verdict.outcome or {
            Action.CONTINUE: Outcome.PASS,
            Action.ACCEPT: Outcome.PASS,
        }.get(verdict.action, Outcome.FAIL)
        elapsed = clock.monotonic() - started
        session.record(
            CheckResult(
                check.name,
                stage,
                outcome,
                verdict.action,
                enforced,
                verdict.reason,
                elapsed,
            )
        )
        self._metrics.inc("mailguard_check_runs_total", check=check.name, outcome=str(outcome))
        self._metrics.observe(CHECK_SECONDS, elapsed, check=check.name)
        if not enforced and verdict.stops:
            log.info("check=%s stage=%s shadow=%s reason=%s", check.name, stage,
                     verdict.action, verdict.reason)
            return CONTINUE
        return verdict

    def _error(
        self,
        check: Check,
        policy: CheckPolicy,
        stage: Stage,
        session: Session,
        *,
        detail: str,
        started: float,
    ) -> Verdict:
        fail_closed = policy.on_error is OnError.TEMPFAIL and policy.mode is Mode.ENFORCE
        action = Action.TEMPFAIL if fail_closed else Action.CONTINUE
        elapsed = session.clock.monotonic() - started
        session.record(
            CheckResult(
                check.name,
                stage,
                Outcome.ERROR,
                action,
                policy.mode is Mode.ENFORCE,
                detail,
                elapsed,
            )
        )
        self._metrics.inc("mailguard_check_runs_total", check=check.name, outcome="error")
        self._metrics.observe(CHECK_SECONDS, elapsed, check=check.name)
        self._metrics.inc(
            "mailguard_check_errors_total", check=check.name, policy=str(policy.on_error)
        )
        log.warning("check=%s stage=%s error=%r policy=%s", check.name, stage, detail,
                    policy.on_error)
        if fail_closed:
            reply = getattr(check, "error_reply", None)
            return tempfail(reply if isinstance(reply, Reply) else ERROR_REPLY,
                            f"{check.name}: {detail}")
        return CONTINUE


def enforce_deferred(session: Session) -> Verdict:
    """The first deferred verdict of the session, if any (called at RCPT). A client that
    authenticated after connecting is not held to connect-time (DNSBL) refusals."""
    if session.auth_user:
        return CONTINUE
    return session.deferred[0] if session.deferred else CONTINUE
