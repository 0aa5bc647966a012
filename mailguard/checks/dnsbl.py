"""DNS blocklists with per-IP overrides (docs/dnsbl.md).

Stage CONNECT; the refusal is *deferred*: decided here, enforced at each RCPT (except to
postmaster@/abuse@ of local domains) by the Conversation. Precedence:

1. `RBLSMTPD` in the tcpserver environment (drop-in mode), with rblsmtpd's meaning:
   set and empty = never block; text = `451 text`; `-text` = `553 text`;
2. relay clients and authenticated users are never blocked;
3. store overrides: allow beats every zone, deny blocks (554 5.7.1);
4. the zones, looked up concurrently (anti-zones too: an A record there = don't block).

Failure policy: per zone (`on_error`): "open" (default, as rblsmtpd: logged and counted in
`mailguard_dnsbl_errors_total{zone=}`) or "tempfail" (a deferred `451 temporary RBL
lookup error`, as rblsmtpd -c). A store that cannot be read raises TemporaryError: the
`[checks.dnsbl]` on_error applies.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from mailguard.clock import Clock
from mailguard.context import IPAddress, Session
from mailguard.dnsresolve import Answer, DnsResolver
from mailguard.errors import MailguardError
from mailguard.metrics import Metrics
from mailguard.netaddr import plain_ip
from mailguard.settings.dnsbl import (
    ERROR_CODES,
    LOOPBACK,
    CodeRange,
    DnsblConfig,
    DnsblZone,
    parse_code,
)
from mailguard.store.overrides import OverrideCache, OverrideStore
from mailguard.verdict import CONTINUE, Action, Reply, Stage, Verdict

if TYPE_CHECKING:
    from mailguard.policy import CheckPolicy
    from mailguard.resources import Resources

log = logging.getLogger("mailguard.dnsbl")

LOOKUP_ERROR = Reply(451, "temporary RBL lookup error")  # rblsmtpd -c, exact text
MAX_TEXT = 400  # a TXT record longer than this is cut (a reply line stays readable)
PROBE_LISTED = ipaddress.IPv4Address("127.0.0.2")  # RFC 5782 section 5: must be listed
PROBE_UNLISTED = ipaddress.IPv4Address("127.0.0.1")  # must not be listed


class Status(StrEnum):
    LISTED = "listed"
    NOT_LISTED = "not-listed"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ZoneResult:
    zone: DnsblZone
    status: Status
    detail: str = ""  # the answer code (listed), or what went wrong (error)
    text: str = ""  # the zone's TXT text, when listed and it has one


# --- pure decisions ------------------------------------------------------------------------


def query_name(ip: IPAddress, zone: str) -> str:
    """`<reversed ip>.<zone>`: octets for IPv4 (IPv4-mapped IPv6 counts as IPv4), the 32
    nibbles for IPv6 (RFC 5782 section 2.4)."""
    ip = plain_ip(ip)
    suffix = ".in-addr.arpa" if ip.version == 4 else ".ip6.arpa"
    return f"{ip.reverse_pointer.removesuffix(suffix)}.{zone.strip('.')}"


def classify(answers: Answer, codes: Sequence[CodeRange]) -> tuple[Status, str]:
    """A zone's A answers → (status, code). Accepted codes list; 127.255.255.0/24 and
    answers outside 127.0.0.0/8 are errors, never listings; other codes are ignored."""
    if not answers:
        return Status.NOT_LISTED, ""
    errors: list[str] = []
    for text in answers:
        try:
            code = ipaddress.IPv4Address(text)
        except ValueError:
            errors.append(text)
            continue
        if code not in LOOPBACK or code in ERROR_CODES:
            errors.append(text)
        elif not codes or any(lo <= code <= hi for lo, hi in codes):
            return Status.LISTED, text
    if errors:
        return Status.ERROR, f"error answer {errors[0]}"
    return Status.NOT_LISTED, ""


def rblsmtpd_verdict(value: str | None) -> Verdict | None:
    """rblsmtpd's `RBLSMTPD`: None when unset (go on with the other rules)."""
    if value is None:
        return None
    if not value:
        return Verdict(Action.CONTINUE, reason="RBLSMTPD empty: not blocked")
    if value.startswith("-"):
        return Verdict(Action.REJECT, Reply(553, _clean(value[1:])), deferred=True,
                       reason="RBLSMTPD block (553)")
    return Verdict(Action.TEMPFAIL, Reply(451, _clean(value)), deferred=True,
                   reason="RBLSMTPD block (451)")


def listing_reply(zone: DnsblZone, ip: IPAddress, txt: str) -> Reply:
    """The zone's TXT text when it has one, else its message template."""
    text = _clean(txt) or zone.message.format(ip=plain_ip(ip), zone=zone.zone.strip("."))
    if zone.reply == "temp":
        return Reply(451, text, "4.7.1")
    return Reply(zone.perm_code, text, "5.7.1")


def deny_reply(ip: IPAddress, reason: str) -> Reply:
    why = f": {_clean(reason)}" if reason.strip() else ""
    return Reply(554, f"connections from {plain_ip(ip)} are refused by local policy{why}",
                 "5.7.1")


def decide(results: Sequence[ZoneResult], ip: IPAddress) -> Verdict:
    """The first listing (in configured zone order) blocks; failing that, an error in a
    `tempfail` zone defers with 451; else no objection."""
    for r in results:
        if r.status is Status.LISTED:
            reply = listing_reply(r.zone, ip, r.text)
            action = Action.TEMPFAIL if reply.temporary else Action.REJECT
            return Verdict(action, reply, deferred=True,
                           reason=f"listed {r.zone.zone} {r.detail}")
    for r in results:
        if r.status is Status.ERROR and r.zone.on_error == "tempfail":
            return Verdict(Action.TEMPFAIL, LOOKUP_ERROR, deferred=True,
                           reason=f"lookup error {r.zone.zone}: {r.detail}")
    errors = [r.zone.zone for r in results if r.status is Status.ERROR]
    if errors:
        return Verdict(Action.CONTINUE, reason=f"not listed (errors: {','.join(errors)})")
    return Verdict(Action.CONTINUE, reason="not listed")


def probe_problem(listed: Answer, unlisted: Answer) -> str | None:
    """RFC 5782 section 5 health test of a zone: None when healthy, else why not."""
    if unlisted:
        return f"lists 127.0.0.1 ({unlisted[0]}): the zone answers everything"
    if not listed:
        return "does not list 127.0.0.2"
    return None


def _clean(text: str) -> str:
    """Reply text from outside (DNS, environment): one line, printable, bounded."""
    line = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return line[:MAX_TEXT]


# --- the check -----------------------------------------------------------------------------


class ZoneHealth:
    """RFC 5782 probes: every `interval_s` (the first at the first connection), zones that
    fail are skipped until a later probe passes. A probe that cannot get an answer
    leaves the zone's state as it was (its lookups then follow its on_error)."""

    def __init__(self, resolver: DnsResolver, zones: Sequence[str], interval_s: float,
                 clock: Clock, metrics: Metrics) -> None:
        self._resolver = resolver
        self._zones = list(zones)
        self._interval_s = interval_s
        self._clock = clock
        self._metrics = metrics
        self._next: float | None = None
        self._lock = asyncio.Lock()
        self.disabled: dict[str, str] = {}  # zone -> why

    async def ensure(self) -> None:
        if self._next is not None and self._clock.monotonic() < self._next:
            return
        async with self._lock:
            if self._next is not None and self._clock.monotonic() < self._next:
                return
            await asyncio.gather(*(self._probe(z) for z in self._zones))
            self._next = self._clock.monotonic() + self._interval_s

    async def _probe(self, zone: str) -> None:
        try:
            listed, unlisted = await asyncio.gather(
                self._resolver.a(query_name(PROBE_LISTED, zone)),
                self._resolver.a(query_name(PROBE_UNLISTED, zone)),
            )
        except MailguardError as exc:
            self._metrics.inc("mailguard_dnsbl_errors_total", zone=zone)
            log.warning("event=dnsbl_probe_error zone=%s error=%r", zone, str(exc))
            return
        problem = probe_problem(listed, unlisted)
        was = self.disabled.get(zone)
        if problem:
            self.disabled[zone] = problem
            if was is None:
                self._metrics.inc("mailguard_dnsbl_zone_disabled_total", zone=zone)
                log.error("event=dnsbl_zone_disabled zone=%s reason=%r", zone, problem)
        elif was is not None:
            del self.disabled[zone]
            log.warning("event=dnsbl_zone_enabled zone=%s", zone)
        self._metrics.set("mailguard_dnsbl_zone_up", 0.0 if problem else 1.0, zone=zone)


class DnsblCheck:
    """See the module docstring. Sets `session.facts["dnsbl"]` (the decision) and, when
    an override matched, `session.facts["override"]` ("allow" / "deny")."""

    name = "dnsbl"
    stages = frozenset({Stage.CONNECT})

    def __init__(self, config: DnsblConfig, resolver: DnsResolver,
                 overrides: OverrideCache | None, metrics: Metrics, clock: Clock) -> None:
        self._config = config
        self._resolver = resolver
        self._overrides = overrides
        self._metrics = metrics
        self._codes = {z.zone: [parse_code(c) for c in z.codes] for z in config.zones}
        self._health = (
            ZoneHealth(resolver, [z.zone for z in config.zones], config.health_interval_s,
                       clock, metrics)
            if config.health_probe and config.zones else None
        )
        metrics.declare("mailguard_dnsbl_listed_total", "counter", "Clients listed, by zone")
        metrics.declare("mailguard_dnsbl_errors_total", "counter", "DNSBL lookup errors by zone")
        metrics.declare("mailguard_dnsbl_zone_up", "gauge", "1 when the zone passed its probe")
        metrics.declare("mailguard_dnsbl_zone_disabled_total", "counter",
                        "Zones disabled by the health probe")

    async def evaluate(self, stage: Stage, session: Session) -> Verdict:
        verdict = await self._decide(session)
        session.facts["dnsbl"] = verdict.reason or "not listed"
        return verdict

    async def _decide(self, session: Session) -> Verdict:
        env_verdict = rblsmtpd_verdict(session.env.get("RBLSMTPD"))
        if env_verdict is not None:
            return env_verdict
        if session.relay_client or session.auth_user:
            return Verdict(Action.CONTINUE, reason="relay client")
        ip = session.client_ip
        if self._overrides is not None:
            entry = await self._overrides.match(ip)
            if entry is not None:
                session.facts["override"] = entry.action
                why = f"{entry.action} override {entry.network}"
                if entry.action == "allow":
                    return Verdict(Action.CONTINUE, reason=why)
                return Verdict(Action.REJECT, deny_reply(ip, entry.reason), deferred=True,
                               reason=why)
        if not self._config.zones:
            return CONTINUE
        if self._health is not None:
            await self._health.ensure()
        disabled = self._health.disabled if self._health is not None else {}
        zones = [z for z in self._config.zones if z.zone not in disabled]
        async with asyncio.TaskGroup() as tg:
            anti_task = tg.create_task(self._anti(ip))
            tasks = [tg.create_task(self._lookup(z, ip)) for z in zones]
        results = [t.result() for t in tasks]
        if anti := anti_task.result():
            return Verdict(Action.CONTINUE, reason=f"anti-listed {anti}")
        verdict = decide(results, ip)
        for r in results:
            if r.status is Status.LISTED:
                self._metrics.inc("mailguard_dnsbl_listed_total", zone=r.zone.zone)
        return verdict

    async def _lookup(self, zone: DnsblZone, ip: IPAddress) -> ZoneResult:
        qname = query_name(ip, zone.zone)
        try:
            status, detail = classify(await self._resolver.a(qname), self._codes[zone.zone])
        except MailguardError as exc:
            status, detail = Status.ERROR, str(exc)
        if status is Status.ERROR:
            self._metrics.inc("mailguard_dnsbl_errors_total", zone=zone.zone)
            log.warning("event=dnsbl_error zone=%s client=%s error=%r on_error=%s",
                        zone.zone, plain_ip(ip), detail, zone.on_error)
            return ZoneResult(zone, status, detail)
        if status is Status.NOT_LISTED:
            return ZoneResult(zone, status)
        try:
            texts = await self._resolver.txt(qname)
        except MailguardError as exc:  # the listing stands; the template gives the text
            log.info("event=dnsbl_txt_error zone=%s error=%r", zone.zone, str(exc))
            texts = None
        return ZoneResult(zone, status, detail, texts[0] if texts else "")

    async def _anti(self, ip: IPAddress) -> str:
        """The first anti-zone with an A record for the client ("" when none)."""
        async def one(zone: str) -> str:
            try:
                return zone if await self._resolver.a(query_name(ip, zone)) else ""
            except MailguardError as exc:  # as rblsmtpd: an anti-zone error exempts nobody
                self._metrics.inc("mailguard_dnsbl_errors_total", zone=zone)
                log.warning("event=dnsbl_error zone=%s client=%s error=%r", zone,
                            plain_ip(ip), str(exc))
                return ""

        found = await asyncio.gather(*(one(z) for z in self._config.anti_zones))
        return next((z for z in found if z), "")


def build_dnsbl(res: Resources, policy: CheckPolicy) -> tuple[DnsblCheck, CheckPolicy]:
    """The check with the daemon's shared resolver and an override cache on its store."""
    overrides = OverrideCache(OverrideStore(res.store.db), res.clock,
                              refresh_s=res.config.dnsbl.override_refresh_s)
    return DnsblCheck(res.config.dnsbl, res.resolver(), overrides, res.metrics, res.clock), policy
