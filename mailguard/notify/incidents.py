"""Alerts to the admin about incidents (`[alerts]`): one mail when an incident begins,
a reminder every `remind_s` while it lasts, and a note when it is resolved — each
recorded in the store's `alert` table (store.alerts), which also makes sure that of two
processes or MX hosts seeing the same incident only one mails it.

`build_incident_mail` is pure (the caller passes the time and the Message-ID); every value
goes through notify.mime's sanitisers (a queue path or a scanner's error text cannot add
a header or break the layout). `Alerter` records, claims, builds and delivers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import make_msgid
from typing import Literal

from mailguard.clock import Clock
from mailguard.delivery.base import Delivery
from mailguard.notify.mime import address_field, header_field, one_line, rfc5322_date, text_message
from mailguard.settings.alerts import AlertsConfig
from mailguard.store.alerts import AlertRecord, AlertStore

log = logging.getLogger("mailguard.alerts")

MailKind = Literal["new", "reminder", "resolved"]
BODY_LINES = 60  # detail lines kept in one mail


def _sender_header(cfg: AlertsConfig, hostname: str) -> str:
    return cfg.sender or f"mailguard@{hostname}"


def build_incident_mail(alert: AlertRecord, kind: MailKind, details: Sequence[str], *,
                        cfg: AlertsConfig, hostname: str, now: float,
                        message_id: str) -> bytes:
    """The complete RFC 5322 message (LF line ends, qmail's stored form)."""
    summary = one_line(alert.message, 150)
    prefix = {"new": "", "reminder": "reminder: ", "resolved": "resolved: "}[kind]
    lines = [
        f"mailguard on {one_line(hostname)} "
        + ("reports an incident." if kind != "resolved" else "reports an incident is over."),
        "",
        f"What:      {summary}",
        f"Incident:  {one_line(alert.key)} ({one_line(alert.kind)}) on "
        f"{one_line(alert.host) or '?'}",
        f"Since:     {rfc5322_date(alert.first_ts)}",
        f"Last seen: {rfc5322_date(alert.last_ts)}",
    ]
    if kind == "resolved":
        lines.append(f"Resolved:  {rfc5322_date(now)}")
    if details:
        lines += ["", *(one_line(d, 500) for d in details[:BODY_LINES])]
    lines += [""]
    if kind == "resolved":
        lines.append("No more reminders for this incident.")
    else:
        lines.append(f"While it lasts you get one reminder every {cfg.remind_s} seconds "
                     f"(this is mail {alert.sent} for it), and a note when it is over.")
    fields = [
        header_field("Date", rfc5322_date(now)),
        address_field("From", [_sender_header(cfg, hostname)]),
        address_field("To", [cfg.to]),
        header_field("Subject", f"[mailguard] {prefix}{summary}"),
        header_field("Message-ID", message_id),
        # RFC 3834: no auto-replies to this, no vacation messages back to us
        b"Auto-Submitted: auto-generated\n",
        header_field("X-Mailguard-Alert", f"{alert.kind} key={alert.key}"),
    ]
    return text_message(fields, "\n".join(lines))


@dataclass(frozen=True, slots=True)
class Raised:
    """What `Alerter.raise_alert` did: the incident as stored and whether a mail went
    out now (False: not due, no `[alerts] to`, or the delivery failed)."""

    alert: AlertRecord
    mailed: bool
    new: bool


class Alerter:
    """Records incidents and mails them to `[alerts] to` (through `delivery`: the plain
    hand-over, never the scanners)."""

    def __init__(self, cfg: AlertsConfig, store: AlertStore, delivery: Delivery, *,
                 clock: Clock, hostname: str) -> None:
        self._cfg = cfg
        self._store = store
        self._delivery = delivery
        self._clock = clock
        self._hostname = hostname

    @property
    def store(self) -> AlertStore:
        return self._store

    async def raise_alert(self, key: str, kind: str, summary: str,
                          details: Sequence[str] = ()) -> Raised:
        """Note the incident `key` now; mail it when the first mail or a reminder is due."""
        now = self._clock.now()
        touched = await self._store.touch(key, kind, summary, host=self._hostname, now=now,
                                          remind_s=self._cfg.remind_s)
        if not touched.due or not self._cfg.to:
            if touched.due:  # nobody to tell: keep the claim unspent (sent stays honest)
                await self._store.unclaim(touched)
            log.info("event=alert key=%r kind=%s new=%s mailed=no summary=%r", key, kind,
                     touched.new, summary)
            return Raised(touched.alert, False, touched.new)
        mail_kind: MailKind = "new" if touched.alert.sent == 1 else "reminder"
        ok = await self._send(touched.alert, mail_kind, details, now)
        if not ok:
            await self._store.unclaim(touched)  # the next sighting tries again
        return Raised(touched.alert, ok, touched.new)

    async def resolve(self, key: str, details: Sequence[str] = ()) -> list[AlertRecord]:
        """Close the incident `key` if one is open; tell the admin when they were told
        about it."""
        now = self._clock.now()
        closed = await self._store.resolve(key, now=now)
        for alert in closed:
            log.info("event=alert_resolved key=%r kind=%s", key, alert.kind)
            if alert.sent and self._cfg.to:
                await self._send(alert, "resolved", details, now)
        return closed

    async def _send(self, alert: AlertRecord, kind: MailKind, details: Sequence[str],
                    now: float) -> bool:
        message = build_incident_mail(
            alert, kind, details, cfg=self._cfg, hostname=self._hostname, now=now,
            message_id=make_msgid("mailguard-alert", self._hostname))
        try:
            delivered = await self._delivery.deliver(self._cfg.sender, [self._cfg.to], message)
            ok, reply = delivered.accepted, str(delivered.reply)
        except Exception as exc:  # an alert must never stop what raised it; logged below
            ok, reply = False, repr(exc)
        log.log(logging.WARNING if ok else logging.ERROR,
                "event=alert_mail result=%s kind=%s key=%r to=%s reply=%r",
                "sent" if ok else "failed", kind, alert.key, self._cfg.to, reply)
        return ok
