"""The relay decision for one recipient: pure, no I/O.

qmail-smtpd accepts a recipient when RELAYCLIENT is set, or when the domain after the
last `@` is in rcpthosts (rcpthosts.c; an address without `@` is accepted, qmail
appends its own domain).  We add one rule qmail does not need but a filter in front of
another MTA does: the old relay tricks (`u%foreign@local`, `foreign!u@local`,
`"u@foreign"@local`, source-route leftovers) are never accepted from non-relay clients,
because the MTA behind us might route on them.

Standard library only: imported by the lean per-connection processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailguard.qmail import replies
from mailguard.verdict import Reply

# Characters that turn a local part into a route: `%` (the "percent hack"), `!` (UUCP
# bang paths), `@` (from `"u@foreign"@local` or `u@foreign@local`), `:` (RFC 5321 C,
# source routes).
_ROUTING_CHARS = frozenset("%!@:")


@dataclass(frozen=True, slots=True)
class RelayDecision:
    """Whether a recipient may be accepted; `reply` is set when it is refused, `reason`
    says why for the logs."""

    allowed: bool
    reply: Reply | None = None
    reason: str = ""


ALLOWED = RelayDecision(allowed=True)


def refused(reply: Reply, reason: str) -> RelayDecision:
    return RelayDecision(allowed=False, reply=reply, reason=reason)


def check_rcpt(
    addr: str, *, relay_allowed: bool, is_local_domain: Callable[[str], bool]
) -> RelayDecision:
    """Decide whether `addr` (as parse_path returned it) may be accepted.

    `relay_allowed` covers RELAYCLIENT, relay networks and authenticated users: they may
    send anywhere, as in qmail.  Otherwise the lower-cased domain must satisfy
    `is_local_domain` (rcpthosts).  A domain with a trailing dot (`u@local.`) or an empty
    domain (`u@`) is refused without asking: qmail's rcpthosts would not match it either,
    and stripping the dot would let the address reach the next MTA unnormalised.
    IP literals are passed as they are (`[192.0.2.1]`): rewrite local ones to
    localiphost first (address.rewrite_local_literal).
    """
    if relay_allowed:
        return ALLOWED
    if not addr:
        return refused(replies.SYNTAX, "empty recipient")
    at = addr.rfind("@")
    if at < 0:  # qmail appends its own domain: a local recipient, e.g. <postmaster>
        return _check_local_part(addr) or ALLOWED
    local, domain = addr[:at], addr[at + 1 :].lower()
    if not domain or domain.endswith("."):
        return refused(replies.NOT_RCPTHOSTS, f"domain {domain!r} is not in rcpthosts")
    if not is_local_domain(domain):
        return refused(replies.NOT_RCPTHOSTS, f"domain {domain!r} is not in rcpthosts")
    if "%" in domain or "!" in domain:
        return refused(replies.RELAY_TRICK, f"routing character in domain {domain!r}")
    return _check_local_part(local) or ALLOWED


def _check_local_part(local: str) -> RelayDecision | None:
    found = sorted(_ROUTING_CHARS.intersection(local))
    if found:
        return refused(replies.RELAY_TRICK, f"routing character {''.join(found)!r} in local part")
    return None


def qualify(addr: str, default_domain: str) -> str:
    """Append the default domain to an address without `@`, as qmail does for
    recipients like <postmaster> (qmail-send, control/envnoathost)."""
    return addr if "@" in addr else f"{addr}@{default_domain}"
