"""Relay control and badmailfrom, as qmail-smtpd does them at RCPT.

Relay: stage RCPT; always enforced (a relay check in log mode would be an open relay, so
the config refuses any other mode). Relay clients (relay networks, RELAYCLIENT,
authenticated users) may send anywhere; others only to local domains, and never through
the classic routing tricks. No I/O, so no failure policy applies.

Badmailfrom: stage RCPT (qmail answers MAIL with 250 and refuses each RCPT)."""

from __future__ import annotations

from collections.abc import Callable, Collection

from mailguard.context import Session
from mailguard.policy import CheckPolicy
from mailguard.qmail import replies
from mailguard.qmail.control import badmailfrom_match
from mailguard.qmail.relay import check_rcpt
from mailguard.resources import Resources
from mailguard.verdict import CONTINUE, Stage, Verdict, reject


class RelayCheck:
    name = "relay"
    stages = frozenset({Stage.RCPT})

    def __init__(self, is_local_domain: Callable[[str], bool]) -> None:
        self._is_local_domain = is_local_domain

    async def evaluate(self, stage: Stage, session: Session) -> Verdict:
        tx = session.transaction
        assert tx is not None
        decision = check_rcpt(
            tx.rcpt,
            relay_allowed=session.relay_client or bool(session.auth_user),
            is_local_domain=self._is_local_domain,
        )
        if decision.allowed or decision.reply is None:
            return CONTINUE
        return reject(decision.reply, decision.reason)


class BadMailFromCheck:
    name = "badmailfrom"
    stages = frozenset({Stage.RCPT})

    def __init__(self, entries: Collection[str]) -> None:
        self._entries = entries

    async def evaluate(self, stage: Stage, session: Session) -> Verdict:
        tx = session.transaction
        assert tx is not None
        if self._entries and badmailfrom_match(tx.mail_from, self._entries):
            return reject(replies.BADMAILFROM, "sender in badmailfrom")
        return CONTINUE


def build_relay(res: Resources, policy: CheckPolicy) -> tuple[RelayCheck, CheckPolicy]:
    return RelayCheck(res.is_local_domain), policy


def build_badmailfrom(res: Resources, policy: CheckPolicy) -> tuple[BadMailFromCheck, CheckPolicy]:
    return BadMailFromCheck(res.config.server.badmailfrom), policy
