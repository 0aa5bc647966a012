"""Greylisting at RCPT (Postgrey's model, state in the store; see docs/greylist.md).

Stage RCPT, after relay control. Exempt: relay clients, authenticated users, configured
client networks and recipients, allow-overrides (`mailguard override add --allow`),
clients refused at connect (DNSBL: they get the block reply instead), and null senders
when configured. A store failure raises TemporaryError: the runner applies
`[checks.greylist] on_error` (tempfail by default, as Postfix does when its greylisting
policy server is down: nothing is lost, the client retries)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from mailguard import __version__
from mailguard.checks.greylist_rules import (
    Decision,
    Result,
    client_key,
    decide,
    exemption,
    header,
    normalise_sender,
)
from mailguard.context import Session
from mailguard.errors import TemporaryError
from mailguard.metrics import Metrics
from mailguard.netaddr import IPAddress
from mailguard.policy import CheckPolicy, Mode
from mailguard.settings.greylist import GreylistConfig
from mailguard.store.greylist import GreylistStore
from mailguard.store.greylist_records import ClientState, TripletState
from mailguard.verdict import Action, Stage, Verdict

if TYPE_CHECKING:
    from mailguard.pipeline import Check
    from mailguard.resources import Resources

log = logging.getLogger("mailguard.greylist")

METRIC = "mailguard_greylist_total"
PURGE_INTERVAL_S = 3600  # forget old triplets this often (on the first RCPT after it)
# Passed triplets and whitelisted clients stay passed for weeks: this process remembers
# them for a few minutes and answers without a store round trip (an admin's purge or a
# whitelist change reaches it within this time).
KNOWN_TTL_S = 300
KNOWN_MAX = 100_000  # entries per kind; the oldest goes first


class OverrideEntry(Protocol):
    @property
    def action(self) -> str: ...


# The override lookup (store.overrides.OverrideCache.match): the entry matching a client.
OverrideLookup = Callable[[IPAddress], Awaitable[OverrideEntry | None]]


def declare_metrics(metrics: Metrics) -> None:
    metrics.declare(METRIC, "counter", "Greylisting decisions by result")


class GreylistCheck:
    """Defers the first try of each (client, sender, recipient) triplet."""

    name = "greylist"
    stages = frozenset({Stage.RCPT})

    def __init__(self, cfg: GreylistConfig, store: GreylistStore, metrics: Metrics, *,
                 overrides: OverrideLookup | None = None, add_header: bool = True) -> None:
        """`add_header`: False in log mode, where nobody was really delayed."""
        self._cfg = cfg
        self._store = store
        self._metrics = metrics
        self._overrides = overrides
        self._add_header = add_header
        self._exempt_nets = tuple(
            ipaddress.ip_network(n, strict=False) for n in cfg.exempt_clients
        )
        self._next_purge: float | None = None
        # (client key, sender, rcpt) or client key -> until when it is known to pass
        self._known_triplets: dict[tuple[str, str, str], float] = {}
        self._known_clients: dict[str, float] = {}
        declare_metrics(metrics)

    async def evaluate(self, stage: Stage, session: Session) -> Verdict:
        tx = session.transaction
        assert tx is not None
        reason = exemption(
            ip=session.client_ip,
            relay_client=session.relay_client,
            auth_user=session.auth_user,
            sender=tx.mail_from,
            rcpt=tx.rcpt,
            cfg=self._cfg,
            exempt_nets=self._exempt_nets,
        )
        if not reason and session.deferred:
            # refused at connect (DNSBL, deny override, RBLSMTPD): its recipients get the
            # block reply right after this check; postmaster@/abuse@ are not delayed
            reason = "refused at connect"
        if not reason and self._cfg.honour_overrides and await self._allowed(session):
            reason = "allow override"
        if reason:
            self._metrics.inc(METRIC, result=str(Result.EXEMPT))
            return Verdict(Action.CONTINUE, reason=f"exempt: {reason}")
        now = session.clock.now()
        await self._maybe_purge(now)
        spf_domain = tx.facts.get("spf_domain", "") if tx.facts.get("spf") == "pass" else ""
        key = client_key(session.client_ip, self._cfg, spf_domain)
        sender = normalise_sender(tx.mail_from)
        rcpt = tx.rcpt.lower()
        if self._known_clients.get(key, 0.0) > now:
            self._metrics.inc(METRIC, result=str(Result.WHITELISTED))
            return Verdict(Action.CONTINUE, reason="client whitelisted")
        if self._known_triplets.get((key, sender, rcpt), 0.0) > now:
            self._metrics.inc(METRIC, result=str(Result.PASSED))
            return Verdict(Action.CONTINUE, reason="triplet passed before")

        def run(
            entry: TripletState | None, client: ClientState | None
        ) -> tuple[TripletState | None, ClientState | None, Decision]:
            d = decide(entry, client, now, self._cfg)
            return d.entry, d.client, d

        decision = await self._store.update(key, sender, rcpt, run)
        self._metrics.inc(METRIC, result=str(decision.result))
        if decision.result is Result.WHITELISTED:
            _remember(self._known_clients, key, now + KNOWN_TTL_S)
        elif decision.result is Result.PASSED:
            _remember(self._known_triplets, (key, sender, rcpt), now + KNOWN_TTL_S)
        if decision.client is not None and decision.client.passes == self._cfg.auto_whitelist_after:
            log.info("event=greylist_whitelisted client_key=%s passes=%d", key,
                     decision.client.passes)
        if decision.delayed_s is not None:
            log.info("event=greylist_passed client_key=%s from=<%s> to=<%s> delayed_s=%d",
                     key, sender, rcpt, decision.delayed_s)
            if self._add_header and not any(h.startswith("X-Greylist:") for h in tx.add_headers):
                tx.add_headers.append(header(decision.delayed_s, __version__, now))
        return decision.verdict

    async def _allowed(self, session: Session) -> bool:
        """An allow override for the client: the DNSBL check's finding when it ran
        (session.facts["override"]), else our own lookup."""
        known = session.facts.get("override")
        if known is not None:
            return known == "allow"
        if self._overrides is None:
            return False
        entry = await self._overrides(session.client_ip)
        return entry is not None and entry.action == "allow"

    async def _maybe_purge(self, now: float) -> None:
        """Forget old entries once an hour; a failure here costs nothing but a log line."""
        if self._next_purge is None:
            self._next_purge = now + PURGE_INTERVAL_S
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL_S
        try:
            triplets, clients = await self._store.purge(
                now, self._cfg.max_age_d * 86400, self._cfg.retry_window_h * 3600
            )
        except TemporaryError as exc:
            log.warning("event=greylist_purge_failed error=%r", str(exc))
            return
        if triplets or clients:
            log.info("event=greylist_purged triplets=%d clients=%d", triplets, clients)


def _remember(known: dict[Any, float], key: Any, until: float) -> None:
    known.pop(key, None)
    known[key] = until
    if len(known) > KNOWN_MAX:
        del known[next(iter(known))]


def build_greylist(res: Resources, policy: CheckPolicy) -> tuple[Check, CheckPolicy]:
    """The check on the daemon's store. Off unless `[checks.greylist]` is configured."""
    from mailguard.store.overrides import OverrideCache, OverrideStore  # noqa: PLC0415

    overrides = OverrideCache(OverrideStore(res.store.db), res.clock)
    check = GreylistCheck(res.config.greylist, GreylistStore(res.store.db), res.metrics,
                          overrides=overrides.match, add_header=policy.mode is Mode.ENFORCE)
    return check, policy
