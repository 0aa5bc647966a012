"""Virus warnings: who is warned (a pure decision), what they get (templates per
language, original headers, never the body), and sending them without ever holding
up the scanning decision.

Backscatter: a virus's envelope sender is almost always forged, so by default only a
sender in one of our domains or an authenticated one is warned (`[virus] notify_sender`).
The warnings themselves go out with the null envelope sender `<>` unless configured,
so a warning that bounces is dropped instead of looping (RFC 5321 4.5.5)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailguard.clock import Clock
from mailguard.delivery.base import Delivery
from mailguard.metrics import Metrics
from mailguard.notify.languages import LanguageLookup
from mailguard.notify.mime import (
    address_field,
    decoded,
    header_field,
    header_value,
    one_line,
    original_headers,
    raw_field,
    rfc5322_date,
    text_message,
)
from mailguard.notify.templates import (
    FALLBACK_LANGUAGE,
    Audience,
    TemplateSet,
    normalise_language,
)
from mailguard.settings.virus import VirusConfig

log = logging.getLogger("mailguard.notify")

NOTIFICATIONS_METRIC = "mailguard_notifications_total"
_ADDR_LIMIT = 320  # RFC 5321 4.5.3.1: 64 + "@" + 255
_NONE = "-"


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """One warning ready for a Delivery: envelope, and the message with LF line ends."""

    sender: str  # "" = the null sender <>
    rcpts: tuple[str, ...]
    message: bytes
    audience: Audience
    language: str


def _host(hostname: str) -> str:
    return one_line(hostname).replace(" ", "") or "localhost"


def _no_language(addr: str) -> str | None:
    return None


def _qualify(addr: str, hostname: str) -> str | None:
    """A deliverable form of an envelope address, or None. Without `@` qmail appends
    its own domain; with controls, white space or an empty side it is not usable."""
    if not addr or addr == "#@[]":  # null sender; qmail's double-bounce sender
        return None
    if any(c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in addr):
        return None
    if "@" not in addr:
        return f"{addr}@{hostname}"
    local, _, domain = addr.rpartition("@")
    return addr if local and domain else None


def sender_is_warned(
    sender: str, *, policy: str, is_local: Callable[[str], bool], authenticated: bool
) -> bool:
    """The notify_sender decision. The null sender is never warned (a bounce or another
    notification), whatever the policy."""
    if policy == "never" or not sender or sender == "#@[]":
        return False
    if policy == "always" or authenticated:
        return True
    domain = sender.rpartition("@")[2].lower() if "@" in sender else ""
    return "@" not in sender or (bool(domain) and is_local(domain))


def plan_audiences(
    *,
    sender: str,
    rcpts: Sequence[str],
    hostname: str,
    cfg: VirusConfig,
    is_local: Callable[[str], bool],
    authenticated: bool,
) -> list[tuple[Audience, str]]:
    """(audience, address) pairs to warn, each address once: the admin's warning wins
    over a sender's, which wins over a recipient's (it says more). Recipients are only
    the local ones: a remote recipient was never ours to tell."""
    plan: dict[str, tuple[Audience, str]] = {}
    if cfg.notify_admin:
        admin = _qualify(cfg.admin_address(hostname), hostname)
        if admin:
            plan[admin.lower()] = ("admin", admin)
    if sender_is_warned(
        sender, policy=cfg.notify_sender, is_local=is_local, authenticated=authenticated
    ):
        addr = _qualify(sender, hostname)
        if addr:
            plan.setdefault(addr.lower(), ("sender", addr))
    if cfg.notify_recipients:
        for rcpt in rcpts:
            addr = _qualify(rcpt, hostname)
            if addr and ("@" not in rcpt or is_local(addr.rpartition("@")[2].lower())):
                plan.setdefault(addr.lower(), ("recipient", addr))
    order: dict[Audience, int] = {"recipient": 0, "sender": 1, "admin": 2}
    return sorted(plan.values(), key=lambda item: order[item[0]])


def choose_language(
    addr: str,
    audience: Audience,
    *,
    language_for: Callable[[str], str | None],
    default: str,
    templates: TemplateSet,
) -> str:
    """The address's preference (language_for covers user, then domain), else the
    configured default, else English: the first that has a template for `audience`."""
    try:
        preferred = language_for(addr)
    except Exception as exc:  # a preference lookup must not stop the warning
        log.warning("event=language_lookup_failed addr=%r error=%r", addr, str(exc))
        preferred = None
    for tag in (preferred, default):
        for lang in normalise_language(tag):
            if templates.exists(lang, audience):
                return lang
    return FALLBACK_LANGUAGE


def build_warnings(
    *,
    original: bytes,
    sender: str,
    rcpts: Sequence[str],
    virus: str,
    hostname: str,
    cfg: VirusConfig,
    is_local: Callable[[str], bool],
    authenticated: bool,
    language_for: Callable[[str], str | None],
    now: float,
    templates: TemplateSet,
) -> list[OutgoingMail]:
    """The warnings for one infected message: one per audience and language.

    `is_local(domain)` is the rcpthosts rule on a lower-cased domain (e.g.
    `Services.is_local_domain`); `language_for(address)` the recipient's language, else
    its domain's, else None. Every value from the message or clamd is sanitised before
    it reaches a header or the text (mime.one_line)."""
    host = _host(hostname)
    plan = plan_audiences(
        sender=sender,
        rcpts=rcpts,
        hostname=host,
        cfg=cfg,
        is_local=is_local,
        authenticated=authenticated,
    )
    if not plan:
        return []
    groups: dict[tuple[Audience, str], list[str]] = {}
    for audience, addr in plan:
        lang = choose_language(
            addr,
            audience,
            language_for=language_for,
            default=cfg.default_language,
            templates=templates,
        )
        groups.setdefault((audience, lang), []).append(addr)

    head = original_headers(original)
    subject = header_value(head, "subject")
    message_id = header_value(head, "message-id")
    values = {
        "virus": one_line(virus) or "unknown",
        "sender": one_line(sender, _ADDR_LIMIT) if sender else "<>",
        "recipients": ", ".join(one_line(r, _ADDR_LIMIT) for r in rcpts) or _NONE,
        "warned": ", ".join(one_line(a, _ADDR_LIMIT) for aud, a in plan if aud != "admin")
        or _NONE,
        "subject": one_line(decoded(subject)) if subject else _NONE,
        "message_id": one_line(message_id) if message_id else _NONE,
        "from": one_line(decoded(header_value(head, "from") or "")) or _NONE,
        "date": rfc5322_date(now),
        "hostname": host,
        "admin": one_line(cfg.admin_address(host), _ADDR_LIMIT),
    }
    quoted = "\n".join("    " + line for line in head) if head else "    " + _NONE
    envelope_sender = cfg.from_address  # "" = <>
    out: list[OutgoingMail] = []
    for (audience, lang), addrs in groups.items():
        tpl = templates.get(lang, audience)
        subject_line = tpl.subject.safe_substitute(values)
        body = tpl.body.safe_substitute(values, headers=quoted)
        # Several recipients of one warning need not learn of each other (Bcc).
        to = (
            address_field("To", addrs)
            if len(addrs) == 1
            else raw_field("To", "undisclosed-recipients:;")
        )
        fields = [
            raw_field("Date", values["date"]),
            raw_field("From", cfg.from_header_value(host)),
            to,
            header_field("Subject", subject_line, limit=400),
            raw_field("Message-ID", f"<{int(now)}.{secrets.token_hex(8)}.virus@{host}>"),
            b"Auto-Submitted: auto-generated\n",  # RFC 3834: no auto-replies to this
        ]
        message = text_message(fields, body)
        out.append(OutgoingMail(envelope_sender, tuple(addrs), message, audience, lang))
    return out


class MailNotifier:
    """The VirusNotifier of the scanning engine: builds the warnings and sends each
    through `delivery`. A warning that fails is logged and counted
    (`mailguard_notifications_total{kind, result}`) and never raises: the scanning
    decision about the infected message stands either way."""

    def __init__(
        self,
        delivery: Delivery,
        *,
        cfg: VirusConfig,
        hostname: str,
        is_local: Callable[[str], bool],
        clock: Clock,
        templates: TemplateSet,
        language_for: Callable[[str], str | None] | None = None,
        languages: LanguageLookup | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._delivery = delivery
        self._cfg = cfg
        self._hostname = _host(hostname)
        self._is_local = is_local
        self._language_for = language_for or _no_language
        self._languages = languages
        self._clock = clock
        self._templates = templates
        self._metrics = metrics or Metrics()
        self._metrics.declare(
            NOTIFICATIONS_METRIC, "counter", "Notifications sent, by kind and result"
        )

    async def notify(
        self,
        original: bytes,
        sender: str,
        rcpts: Sequence[str],
        virus: str,
        *,
        authenticated: bool = False,
    ) -> None:
        """Warn about `original` (found to carry `virus`); `authenticated` = the
        session had logged in (SMTP AUTH), which makes its sender worth warning."""
        language_for = await self._language_source(sender, rcpts, authenticated)
        try:
            warnings = build_warnings(
                original=original,
                sender=sender,
                rcpts=rcpts,
                virus=virus,
                hostname=self._hostname,
                cfg=self._cfg,
                is_local=self._is_local,
                authenticated=authenticated,
                language_for=language_for,
                now=self._clock.now(),
                templates=self._templates,
            )
        except Exception:
            log.exception("event=notification_failed kind=virus stage=build")
            self._metrics.inc(NOTIFICATIONS_METRIC, kind="virus", result="error")
            return
        for mail in warnings:
            await self._send(mail, virus)

    async def _language_source(
        self, sender: str, rcpts: Sequence[str], authenticated: bool
    ) -> Callable[[str], str | None]:
        """`language_for`, preceded by one batched `languages` lookup for the addresses
        to be warned; a failed lookup is logged and the defaults apply."""
        if self._languages is None:
            return self._language_for
        plan = plan_audiences(
            sender=sender,
            rcpts=rcpts,
            hostname=self._hostname,
            cfg=self._cfg,
            is_local=self._is_local,
            authenticated=authenticated,
        )
        try:
            found = dict(await self._languages([addr for _, addr in plan])) if plan else {}
        except Exception as exc:  # the preference store is down: warn in the default
            log.warning("event=language_lookup_failed error=%r", str(exc))
            found = {}
        fallback = self._language_for
        return lambda addr: found.get(addr) or fallback(addr)

    async def _send(self, mail: OutgoingMail, virus: str) -> None:
        kind = f"virus_{mail.audience}"
        try:
            result = await self._delivery.deliver(mail.sender, mail.rcpts, mail.message)
        except Exception as exc:
            log.error(
                "event=notification_failed kind=%s rcpts=%r error=%r",
                kind,
                list(mail.rcpts),
                str(exc),
            )
            self._metrics.inc(NOTIFICATIONS_METRIC, kind=kind, result="error")
            return
        if result.accepted:
            log.info(
                "event=notification_sent kind=%s lang=%s rcpts=%r virus=%r",
                kind,
                mail.language,
                list(mail.rcpts),
                one_line(virus),
            )
            self._metrics.inc(NOTIFICATIONS_METRIC, kind=kind, result="sent")
        else:
            log.warning(
                "event=notification_failed kind=%s rcpts=%r reply=%r",
                kind,
                list(mail.rcpts),
                str(result.reply),
            )
            self._metrics.inc(NOTIFICATIONS_METRIC, kind=kind, result="failed")
