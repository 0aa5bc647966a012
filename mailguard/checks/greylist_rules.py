"""Greylisting decisions without I/O: sender normalisation, the triplet key, exemptions
and `decide()`, Postgrey's state machine. Tested with tables (tests/unit/test_greylist_*).

A triplet is (client key, normalised sender, recipient). Its first try is deferred; a
retry after `delay_s` and within `retry_window_h` passes and is remembered, so later mail
of the triplet passes at once. A client whose retries passed `auto_whitelist_after` times
(counted at most once an hour, as Postgrey does) skips greylisting altogether."""

from __future__ import annotations

import email.utils
import ipaddress
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from mailguard.netaddr import IPAddress, plain_ip
from mailguard.settings.greylist import GreylistConfig
from mailguard.store.greylist_records import ClientState, TripletState
from mailguard.verdict import Action, Reply, Verdict, tempfail

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

PASS_COUNT_INTERVAL_S = 3600  # one counted pass per client and hour (Postgrey)
# A passed triplet's last_seen is rewritten at most this often: it only keeps the row from
# being purged (max_age_d), and skipping the write keeps known senders off the write path.
TOUCH_INTERVAL_S = 3600
NULL_SENDER = "<>"  # the sender part of a bounce's triplet

# BATV (draft-levine-smtp-batv): "prvs=TAG=user" (and Microsoft's "msprvs1=TAG=user"),
# and the older "prvs=user/TAG"; the tag changes with every message.
_BATV_TAG_FIRST = re.compile(r"^(?:ms)?prvs\d*=[0-9a-z]+=(.+)$")
_BATV_TAG_LAST = re.compile(r"^prvs=(.+)/[0-9a-z]+$")
# VERP and friends: a number standing alone between non-word characters (Postgrey's
# s/\b\d+\b/#/g), so bounce-1234-5678@list gives one key for all its messages.
_NUMBER = re.compile(r"\b\d+\b", re.ASCII)


class Result(StrEnum):
    """`mailguard_greylist_total{result=...}`."""

    DEFERRED = "deferred"
    PASSED = "passed"
    WHITELISTED = "whitelisted"
    EXEMPT = "exempt"


def normalise_sender(sender: str) -> str:
    """The sender part of a triplet: lower-case, BATV tag and `+extension` removed,
    stand-alone numbers folded to "#". The null sender is "<>"."""
    if not sender:
        return NULL_SENDER
    addr = sender.lower()
    local, at, domain = addr.rpartition("@")
    if not at:
        local, domain = addr, ""
    for pattern in (_BATV_TAG_FIRST, _BATV_TAG_LAST):
        m = pattern.match(local)
        if m:
            local = m.group(1)
            break
    plus = local.find("+")
    if plus > 0:
        local = local[:plus]
    local = _NUMBER.sub("#", local)
    return f"{local}@{domain}" if at else local


def client_key(ip: IPAddress, cfg: GreylistConfig, spf_domain: str = "") -> str:
    """The client part of a triplet. `spf_domain` is the sender domain when SPF passed
    (only used with key = "spf-domain"); without it that key falls back to the net."""
    if cfg.key == "spf-domain" and spf_domain:
        return spf_domain.lower().rstrip(".")
    ip = plain_ip(ip)
    if cfg.key == "ip":
        return str(ip)
    prefix = cfg.ipv4_prefix if ip.version == 4 else cfg.ipv6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def rcpt_exempt(rcpt: str, entries: Sequence[str]) -> bool:
    """`user@domain` (also matches user+ext@domain), `@domain`, or `user@` (any domain)."""
    local, at, domain = rcpt.lower().rpartition("@")
    if not at:
        local, domain = domain, ""  # <postmaster>: no domain
    base = local.split("+", 1)[0] if local.find("+") > 0 else local
    for entry in entries:
        e_local, _, e_domain = entry.lower().rpartition("@")
        if e_domain and e_domain != domain:
            continue
        if not e_local or e_local in (local, base):
            return True
    return False


def exemption(
    *,
    ip: IPAddress,
    relay_client: bool,
    auth_user: str,
    sender: str,
    rcpt: str,
    cfg: GreylistConfig,
    exempt_nets: Sequence[Network],
) -> str:
    """Why this recipient skips greylisting ("" = it does not). Overrides are looked up
    by the check (they need the store)."""
    if relay_client:
        return "relay client"
    if auth_user:
        return "authenticated"
    ip = plain_ip(ip)
    if any(ip.version == n.version and ip in n for n in exempt_nets):
        return "exempt client"
    if cfg.exempt_rcpts and rcpt_exempt(rcpt, cfg.exempt_rcpts):
        return "exempt recipient"
    if not sender and cfg.null_sender == "exempt":
        return "null sender"
    return ""


@dataclass(frozen=True, slots=True)
class Decision:
    """What `decide` says, and the new state to store (None = leave the row as it is)."""

    result: Result
    entry: TripletState | None = None
    client: ClientState | None = None
    wait_s: int = 0  # deferred: seconds until a retry can pass
    delayed_s: int | None = None  # the first accepted retry: seconds the sender was delayed
    reason: str = ""

    @property
    def verdict(self) -> Verdict:
        if self.result is Result.DEFERRED:
            return tempfail(deferral_reply(self.wait_s), self.reason)
        return Verdict(Action.CONTINUE, reason=self.reason)


def deferral_reply(wait_s: int) -> Reply:
    unit = "second" if wait_s == 1 else "seconds"
    return Reply(451, f"Greylisted, please try again in {wait_s} {unit}", "4.7.1")


def header(delayed_s: int, version: str, now: float) -> str:
    """The X-Greylist line added to a message whose retry was accepted (RFC 5322 date)."""
    date = email.utils.formatdate(now, usegmt=True)
    return f"X-Greylist: delayed {delayed_s} seconds by mailguard-{version}; {date}"


def decide(
    entry: TripletState | None, client: ClientState | None, now: float, cfg: GreylistConfig
) -> Decision:
    """The triplet's verdict and new state at `now` (epoch seconds)."""
    threshold = cfg.auto_whitelist_after
    if threshold and client is not None and client.passes >= threshold:
        touch = now - client.last_seen >= PASS_COUNT_INTERVAL_S  # keeps it from being purged
        return Decision(
            Result.WHITELISTED,
            client=replace(client, last_seen=now) if touch else None,
            reason=f"client whitelisted after {client.passes} passes",
        )
    if entry is not None and now - entry.last_seen > cfg.max_age_d * 86400:
        entry = None  # forgotten: not purged yet, but as good as gone
    if entry is not None and entry.passed_ts is not None:
        touch = now - entry.last_seen >= TOUCH_INTERVAL_S
        return Decision(
            Result.PASSED, entry=replace(entry, last_seen=now) if touch else None,
            reason="triplet passed before",
        )
    restart = entry is not None and now - entry.first_seen > cfg.retry_window_h * 3600
    if entry is None or restart:
        first, deferrals = now, 0
    else:
        first, deferrals = entry.first_seen, entry.deferrals
    waited = now - first
    if waited < cfg.delay_s:
        wait = max(1, math.ceil(cfg.delay_s - waited))
        what = "first try" if deferrals == 0 else f"retry {deferrals}, too early"
        if restart:
            what = "first try (retry window expired)"
        return Decision(
            Result.DEFERRED,
            entry=TripletState(first, now, None, deferrals + 1),
            wait_s=wait,
            reason=f"greylisted: {what}",
        )
    new_client: ClientState | None = None
    if threshold:
        if client is None:
            new_client = ClientState(1, now, now)
        elif now - client.last_seen >= PASS_COUNT_INTERVAL_S:
            new_client = replace(client, passes=client.passes + 1, last_seen=now)
    delayed = int(waited)
    return Decision(
        Result.PASSED,
        entry=TripletState(first, now, now, deferrals),
        client=new_client,
        delayed_s=delayed,
        reason=f"greylist passed after {delayed}s",
    )


def allow_key(text: str, cfg: GreylistConfig) -> str:
    """The client key `mailguard greylist allow TEXT` whitelists: an IP gives its key as
    configured; a network must be the configured size; a domain needs key = "spf-domain".
    Raises ValueError with what to do instead."""
    text = text.strip()
    try:
        return client_key(ipaddress.ip_address(text), cfg)
    except ValueError:
        pass
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network") from None
        size = net.max_prefixlen if cfg.key == "ip" else (
            cfg.ipv4_prefix if net.version == 4 else cfg.ipv6_prefix)
        if net.prefixlen != size:
            raise ValueError(
                f"greylisting keys clients on /{size} (key = {cfg.key!r}): give an address "
                f"or a /{size}; for other networks use [greylist] exempt_clients or "
                "`mailguard override add --allow`"
            )
        return str(net)
    if cfg.key != "spf-domain":
        raise ValueError(f"{text!r} is not an IP address; domains are keys only with "
                         'key = "spf-domain"')
    domain = text.lower().rstrip(".")
    if not domain or any(not label for label in domain.split(".")):
        raise ValueError(f"{text!r} is not a domain")
    return domain
