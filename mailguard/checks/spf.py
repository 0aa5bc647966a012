"""SPF (RFC 7208) at MAIL FROM with pyspf, recorded as Received-SPF and
Authentication-Results headers and as `tx.facts["spf"]` / `tx.facts["spf_domain"]`
(greylisting keys on the domain when SPF passed). See docs/spf.md.

Stage MAIL; relay clients and authenticated users are not checked. The null sender is
checked with the HELO identity (RFC 7208 2.4). What each result does is `[spf]`: "tag"
(headers only, the default), "reject" (550 5.7.23 / 5.7.24) or "tempfail" (451). DNS
failures are SPF's own "temperror" result, so they follow `[spf] temperror`, not on_error.

pyspf is blocking and would use dnspython's global resolver: it runs in a worker thread,
and its `spf.DNSLookup` hook is pointed (once, always at the same function) at `_lookup`,
which resolves with the resolver given for the current call through a ContextVar —
`asyncio.to_thread` gives each call its own context, so concurrent checks never share
or swap resolvers, and no lock is needed."""

from __future__ import annotations

import asyncio
import contextvars
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dns.exception
import dns.name
import dns.resolver
import spf

from mailguard.context import Session
from mailguard.netaddr import plain_ip
from mailguard.policy import CheckPolicy
from mailguard.settings.spf import SpfConfig
from mailguard.verdict import Action, Reply, Stage, Verdict, reject, tempfail

if TYPE_CHECKING:
    from mailguard.pipeline import Check
    from mailguard.resources import Resources

_RESOLVER: contextvars.ContextVar[dns.resolver.Resolver] = contextvars.ContextVar("spf_resolver")
_UNSAFE = re.compile(r"[^\x21-\x7e ]|[()\\]")  # what may not appear in a header comment
MAX_EXPLANATION = 200


def _lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20.0) -> list[Any]:
    """pyspf's DNSLookup contract: [((name, type), value)], [] for NXDOMAIN / no data,
    spf.TempError for anything else; values shaped as pyspf's own dnspython driver."""
    resolver = _RESOLVER.get(None)
    if resolver is None:  # never fall back to the system resolver behind our back
        raise spf.TempError("DNS: no resolver configured for this SPF check")
    lifetime = min(float(timeout), resolver.lifetime) if timeout else resolver.lifetime
    try:
        answer = resolver.resolve(name, qtype, lifetime=lifetime, search=False,
                                  raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return []
    except dns.exception.DNSException as exc:
        raise spf.TempError(f"DNS {exc}") from None
    out: list[Any] = []
    for rdata in answer:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


def _install_lookup() -> None:
    """Point pyspf at `_lookup`: idempotent, the same stateless function every time."""
    if spf.DNSLookup is not _lookup:
        spf.DNSLookup = _lookup


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    result: str  # pass | fail | softfail | neutral | none | permerror | temperror
    explanation: str
    domain: str  # the domain checked (sender's, or HELO's for the null sender)
    identity: str  # "mailfrom" | "helo"


def _checkable(domain: str) -> bool:
    """A domain pyspf can look up: not empty, not an address literal, has a dot."""
    return bool(domain) and not domain.startswith("[") and "." in domain.strip(".")


def evaluate_spf(resolver: dns.resolver.Resolver, ip: str, sender: str, helo: str,
                 query_time_s: float) -> SpfOutcome:
    """Blocking: run pyspf with `resolver` (call it through asyncio.to_thread)."""
    identity = "mailfrom" if sender else "helo"
    domain = sender.rpartition("@")[2] if "@" in sender else helo
    if not _checkable(domain):
        return SpfOutcome("none", "no domain to check", domain, identity)
    token = _RESOLVER.set(resolver)
    try:
        query = spf.query(i=ip, s=sender, h=helo, querytime=query_time_s)
        result, _code, explanation = query.check()
        domain = query.o or domain
    except spf.PermError as exc:  # e.g. an address pyspf cannot parse
        result, explanation = "permerror", str(exc)
    finally:
        _RESOLVER.reset(token)
    return SpfOutcome(str(result), str(explanation), domain.lower(), identity)


def _clean(text: str) -> str:
    """Safe inside a header comment and an SMTP reply: printable ASCII, no parentheses."""
    return _UNSAFE.sub("", " ".join(text.split()))[:MAX_EXPLANATION]


def comment(result: str, ip: str, domain: str, explanation: str) -> str:
    """The Received-SPF comment (the wording of pyspf and libspf2)."""
    texts = {
        "pass": f"domain of {domain} designates {ip} as permitted sender",
        "fail": f"domain of {domain} does not designate {ip} as permitted sender",
        "softfail": f"transitioning domain of {domain} does not designate {ip} as "
        "permitted sender",
        "neutral": f"{ip} is neither permitted nor denied by domain of {domain}",
        "none": f"domain of {domain} does not designate permitted sender hosts",
        "permerror": f"permanent error in processing domain of {domain}: {explanation}",
        "temperror": f"temporary error in processing during lookup of {domain}: {explanation}",
    }
    return _clean(texts.get(result, result))


def headers(outcome: SpfOutcome, *, hostname: str, ip: str, sender: str,
            helo: str) -> list[str]:
    """Received-SPF (RFC 7208 9.1) and Authentication-Results (RFC 8601) lines."""
    helo_text = _clean(helo) or "unknown"
    sender_text = sender.replace("\\", "\\\\").replace('"', '\\"')
    received = (
        f"Received-SPF: {outcome.result} ({_clean(hostname)}: "
        f"{comment(outcome.result, ip, outcome.domain, _clean(outcome.explanation))}) "
        f'client-ip={ip}; envelope-from="{sender_text}"; helo={helo_text}; '
        f"identity={outcome.identity};"
    )
    prop = "smtp.mailfrom" if outcome.identity == "mailfrom" else "smtp.helo"
    results = (f"Authentication-Results: {hostname}; spf={outcome.result} "
               f"{prop}={outcome.domain or 'unknown'}")
    return [received, results]


def verdict(outcome: SpfOutcome, cfg: SpfConfig) -> Verdict:
    """What `[spf]` says about this result (the runner acts on it only in enforce mode)."""
    result = outcome.result
    action = cfg.action(result)
    reason = f"{result} for {outcome.domain or '(no domain)'}"  # the summary's spf=fail(…)
    failed = result not in ("permerror", "temperror")  # 5.7.23 vs 5.7.24 (RFC 7372)
    explanation = _clean(outcome.explanation) or result
    if action == "reject":
        if failed:
            return reject(Reply(550, f"SPF validation failed: {explanation}", "5.7.23"), reason)
        return reject(Reply(550, f"SPF validation error: {explanation}", "5.7.24"), reason)
    if action == "tempfail":
        status = "4.7.23" if failed else "4.7.24"
        return tempfail(Reply(451, f"SPF temporary error: {explanation}", status), reason)
    return Verdict(Action.CONTINUE, reason=reason)


class SpfCheck:
    """Evaluates SPF for the MAIL FROM (or HELO) identity of strangers."""

    name = "spf"
    stages = frozenset({Stage.MAIL})

    def __init__(self, cfg: SpfConfig, resolver: dns.resolver.Resolver, *,
                 hostname: str) -> None:
        self._cfg = cfg
        self._resolver = resolver
        self._hostname = hostname
        _install_lookup()

    async def evaluate(self, stage: Stage, session: Session) -> Verdict:
        tx = session.transaction
        assert tx is not None, "the MAIL stage runs on the new transaction"
        if session.relay_client or session.auth_user:
            return Verdict(Action.CONTINUE, reason="not checked: relay client")
        ip = str(plain_ip(session.client_ip))
        outcome = await asyncio.to_thread(
            evaluate_spf, self._resolver, ip, tx.mail_from, session.helo, self._cfg.query_time_s
        )
        tx.facts["spf"] = outcome.result
        tx.facts["spf_domain"] = outcome.domain
        tx.add_headers.extend(
            headers(outcome, hostname=self._hostname, ip=ip, sender=tx.mail_from,
                    helo=session.helo)
        )
        return verdict(outcome, self._cfg)


def build_spf(res: Resources, policy: CheckPolicy) -> tuple[Check, CheckPolicy]:
    """The check with a blocking twin of the daemon's resolver (same servers, timeout).
    Off unless `[checks.spf]` is configured."""
    check = SpfCheck(res.config.spf, res.resolver().sync_resolver(),
                     hostname=res.config.server.hostname)
    return check, policy
