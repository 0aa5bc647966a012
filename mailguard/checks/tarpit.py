"""Per-connection tarpit, as qmail's tarpit patch: after `count` recipients accepted in
one connection, sleep `delay_s` seconds before answering each further RCPT. Slows down
dictionary attacks and bulk senders without refusing anything.

Stage RCPT; no I/O, so no failure policy applies. In log mode the delay is recorded but
not slept. The check should come after the checks that may refuse the recipient, so
that (as with the patch) only recipients about to be accepted are delayed; a client
refused at connect (a deferred DNSBL refusal) is not delayed either."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from mailguard.context import Session
from mailguard.metrics import Metrics
from mailguard.policy import CheckPolicy, Mode
from mailguard.settings.limits import MAX_DELAY_S, TarpitConfig
from mailguard.verdict import CONTINUE, Action, Stage, Verdict

if TYPE_CHECKING:
    from mailguard.pipeline import Check
    from mailguard.resources import Resources


def scan_ulong(text: str) -> int:
    """qmail's scan_ulong: the leading decimal digits, 0 when there are none."""
    digits = ""
    for ch in text:
        if not ("0" <= ch <= "9"):
            break
        digits += ch
    return int(digits) if digits else 0


def effective(cfg: TarpitConfig, env: Mapping[str, str]) -> tuple[int, int]:
    """(count, delay_s): the configuration, overridden by TARPITCOUNT / TARPITDELAY from
    the tcpserver environment (drop-in mode, set per client with tcprules). The delay is
    capped at RFC 5321's 5-minute RCPT timeout."""
    count = cfg.count or 0
    delay = cfg.delay_s if cfg.delay_s is not None else 5
    if "TARPITCOUNT" in env:
        count = scan_ulong(env["TARPITCOUNT"])
    if "TARPITDELAY" in env:
        delay = scan_ulong(env["TARPITDELAY"])
    return count, min(delay, MAX_DELAY_S)


def tarpit_delay(accepted: int, count: int, delay_s: int) -> int:
    """Seconds to wait before answering the next RCPT, `accepted` recipients having been
    accepted in this connection already (0 = off)."""
    if count <= 0 or accepted < count:
        return 0
    return delay_s


class TarpitCheck:
    name = "tarpit"
    stages = frozenset({Stage.RCPT})

    def __init__(self, cfg: TarpitConfig, metrics: Metrics, *, enforce: bool) -> None:
        self._cfg = cfg
        self._metrics = metrics
        self._enforce = enforce
        metrics.declare("mailguard_tarpit_delays_total", "counter",
                        "RCPTs delayed by the per-connection tarpit")

    async def evaluate(self, stage: Stage, session: Session) -> Verdict:
        if session.deferred and not session.auth_user:
            return CONTINUE  # refused at connect: the block reply comes at once
        count, delay_s = effective(self._cfg, session.env)
        delay = tarpit_delay(session.rcpt_count, count, delay_s)
        if not delay:
            return CONTINUE
        if self._enforce:
            await session.clock.sleep(delay)
        self._metrics.inc("mailguard_tarpit_delays_total")
        verb = "delayed" if self._enforce else "would delay"
        return Verdict(Action.CONTINUE,
                       reason=f"{verb} {delay}s after {session.rcpt_count} recipients")


def build_tarpit(res: Resources, policy: CheckPolicy) -> tuple[Check, CheckPolicy]:
    """The check and its policy. `timeout_s` of [checks.tarpit] bounds the check's own
    work; the deliberate delay (at most MAX_DELAY_S) is added to it."""
    check = TarpitCheck(res.config.tarpit, res.metrics, enforce=policy.mode is Mode.ENFORCE)
    return check, replace(policy, timeout_s=policy.timeout_s + MAX_DELAY_S)
