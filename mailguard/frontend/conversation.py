"""One SMTP session's logic without sockets: each command in, a reply (and whether to
close) out. The protocol adapter (protocol.py) does the bytes; this decides, following
qmail-smtpd's behaviour and running the pipeline at each stage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from mailguard.body import Body
from mailguard.context import Session, Transaction
from mailguard.delivery.base import Delivered
from mailguard.delivery.qmail_queue import QmailQueueDelivery
from mailguard.frontend import replies
from mailguard.frontend.services import Services
from mailguard.pipeline import enforce_deferred
from mailguard.qmail.address import AddressError, parse_path
from mailguard.qmail.received import received_header
from mailguard.qmail.relay import qualify
from mailguard.summary import log_transaction
from mailguard.verdict import Action, Reply, Stage, Verdict

log = logging.getLogger("mailguard.smtp")

EXEMPT_LOCALPARTS = frozenset({"postmaster", "abuse"})  # reach them even when blocked
# RFC 5321 4.5.3.1.10: "452 too many recipients" past the limit (RFC 3463 4.5.3); the
# client sends those recipients again in another transaction.
TOO_MANY_RCPTS = Reply(452, "too many recipients", "4.5.3")



def session_too_long(host: str) -> Reply:
    """Past `[server] session_timeout_s` (mailguard's, in the style of qmail's 421s)."""
    return Reply(421, f"{host} session time limit reached, closing connection (#4.4.2)")


def rcpt_key(addr: str) -> str:
    """What makes two recipients the same: the domain in any case (RFC 5321 2.4), the
    local part exactly as given (only the destination host may interpret it)."""
    local, at, domain = addr.rpartition("@")
    return f"{local}@{domain.lower()}" if at else addr


def unique_rcpts(rcpts: Iterable[str]) -> list[str]:
    """`rcpts` without repetitions (by `rcpt_key`), first occurrences in order."""
    seen: set[str] = set()
    out: list[str] = []
    for addr in rcpts:
        key = rcpt_key(addr)
        if key not in seen:
            seen.add(key)
            out.append(addr)
    return out


@dataclass(frozen=True, slots=True)
class Step:
    """A reply, and whether the connection closes after it."""

    reply: Reply
    close: bool = False


@dataclass(frozen=True, slots=True)
class Data:
    """What the protocol read after DATA: the unstuffed message with LF line ends, in
    memory or spooled (empty when too big or when spooling failed). data_end owns it:
    it closes it, or hands it to the hand-over task, which does."""

    body: Body
    size: int  # octets received (CRLF counted), for databytes
    too_big: bool
    hops: int  # Received: / Delivered-To: header lines
    spool_failed: bool = False  # the spool file could not be written (disk full): 451


def hands_to_qmail_queue(delivery: object) -> bool:
    """The delivery is a qmail-queue program, possibly inside wrappers that keep it as
    `inner` (e.g. the hand-off timer)."""
    for _ in range(8):  # wrappers do not nest deeper; a cycle must not hang a session
        if isinstance(delivery, QmailQueueDelivery):
            return True
        delivery = getattr(delivery, "inner", None)
        if delivery is None:
            return False
    return False


class Conversation:
    """The state of one SMTP session and its decisions. `extended` False: qmail-smtpd's
    exact dialogue (`[server] extensions`, docs/drop-in.md): EHLO offers PIPELINING and
    8BITMIME only, STARTTLS and AUTH are unimplemented, the Received line says `with
    SMTP`, and recipients go to a qmail-queue as the client gave them."""

    def __init__(self, services: Services, session: Session, *, extended: bool = True) -> None:
        self.services = services
        self.session = session
        self.server = services.config.server
        self.extended = extended
        self._tx_started = 0.0
        self._rcpt_keys: set[str] = set()  # rcpt_key of the transaction's recipients
        self._over_limit = False  # a RCPT of this transaction got TOO_MANY_RCPTS

    # --- connection ---------------------------------------------------------------------

    def greeting(self) -> Reply:
        return replies.greeting(self.server.greeting)

    async def connect(self) -> Step:
        """Run CONNECT checks; a non-deferred refusal closes the session after the reply."""
        verdict = await self.services.pipeline.run(Stage.CONNECT, self.session)
        if verdict.action in (Action.TEMPFAIL, Action.REJECT) and verdict.reply:
            return Step(verdict.reply, close=True)
        return Step(self.greeting())

    # --- commands -----------------------------------------------------------------------

    async def helo(self, arg: str, *, esmtp: bool) -> Step:
        self._end_transaction("aborted")  # qmail-smtpd: seenmail = 0 (RFC 5321 4.1.4)
        self.session.helo = arg.strip()
        self.session.esmtp = esmtp
        verdict = await self.services.pipeline.run(Stage.HELO, self.session)
        refusal = self._refusal(verdict)
        if refusal:
            return refusal
        host = self.server.greeting  # qmail-smtpd's smtp_greet(): the whole smtpgreeting
        if not esmtp:
            return Step(replies.helo_reply(host))
        if not self.extended:  # qmail-smtpd.c smtp_ehlo(), byte for byte
            return Step(Reply(250, f"{host}\nPIPELINING\n8BITMIME"))
        size = self.server.databytes or 0
        lines = [host, "PIPELINING", "8BITMIME", f"SIZE {size}" if size else "SIZE", "SMTPUTF8"]
        if self.services.tls is not None and not self.session.tls:
            lines.append("STARTTLS")
        if self.services.auth is not None:
            lines += self.services.auth.ehlo_keywords(self.session)
        return Step(Reply(250, "\n".join(lines)))

    async def mail(self, arg: str) -> Step:
        self._end_transaction("aborted")
        local_ips = [self.session.local_ip] if self.session.local_ip else []
        try:  # qmail's addrparse() rewrites u@[our IP] in MAIL as in RCPT
            path = parse_path(arg, kind="mail", local_ips=local_ips,
                              localiphost=self.server.localiphost,
                              ignore_params=not self.extended)
        except AddressError as exc:
            return Step(exc.reply)
        limit = self.server.databytes or 0
        declared = path.params.get("SIZE", "")
        if limit and declared.isdigit() and int(declared) > limit:
            return Step(replies.DATABYTES)  # RFC 1870: refuse early what we would refuse later
        self.session.transaction = Transaction(path.address, dict(path.params))
        self._rcpt_keys = set()
        self._over_limit = False
        self._tx_started = self.services.clock.monotonic()
        verdict = await self.services.pipeline.run(Stage.MAIL, self.session)
        refusal = self._refusal(verdict)
        if refusal:  # e.g. SPF reject, suspended user: still one summary line
            return self._finish(refusal, "tempfail" if refusal.reply.temporary else "rejected")
        return Step(replies.OK)

    async def rcpt(self, arg: str) -> Step:
        tx = self.session.transaction
        if tx is None:
            return Step(replies.MAIL_FIRST)
        local_ips = [self.session.local_ip] if self.session.local_ip else []
        try:
            path = parse_path(arg, kind="rcpt", local_ips=local_ips,
                              localiphost=self.server.localiphost,
                              ignore_params=not self.extended)
        except AddressError as exc:
            return Step(exc.reply)
        # Checks see the address as given: qmail accepts <postmaster> (no domain) whatever
        # rcpthosts says, and qualifies it with its own name afterwards.
        given = path.address
        # qmail appends RELAYCLIENT's value to the address as given, then qualifies it
        addr = given + self.session.relay_suffix
        if self.extended or not hands_to_qmail_queue(self.services.queue_stage.delivery):
            # qmail-smtpd hands `Tdave` to qmail-queue as it got it (qmail-send qualifies
            # it with envnoathost); our own spool needs the domain now
            addr = qualify(addr, self.server.hostname)
        key = rcpt_key(addr)
        if key in self._rcpt_keys:
            # Already accepted: qmail's 250, but one copy (no checks run again, nothing
            # counted): 10,000 identical RCPTs must not become 10,000 deliveries.
            return Step(replies.OK)
        if len(tx.rcpts) >= self.server.max_rcpts:
            if not self._over_limit:  # the first one only: the summary line stays short
                self._over_limit = True
                tx.refused.append(f"{addr}={TOO_MANY_RCPTS.code}")
            return Step(TOO_MANY_RCPTS)
        tx.rcpt = given
        verdict = await self.services.pipeline.run(Stage.RCPT, self.session)
        if not verdict.stops and not self._exempt(given):
            verdict = enforce_deferred(self.session)
        refusal = self._refusal(verdict)
        if refusal:
            tx.refused.append(f"{given}={refusal.reply.code}")
            return refusal
        # An address the delivery can never store (a local part too long for a Maildir
        # name, an empty domain) is refused now: accepted, it would fail the message for
        # every recipient at the end of DATA.
        undeliverable = self.services.queue_stage.refuses(addr)
        if undeliverable is not None:
            tx.refused.append(f"{addr}={undeliverable.code}")
            return Step(undeliverable)
        tx.rcpts.append(addr)
        self._rcpt_keys.add(key)
        self.session.rcpt_count += 1
        return Step(replies.OK)

    def data_start(self) -> Step | None:
        """The 503 for DATA out of order, or None: go ahead and read the message."""
        tx = self.session.transaction
        if tx is None:
            return Step(replies.MAIL_FIRST)
        if not tx.rcpts:
            return Step(replies.RCPT_FIRST)
        return None

    async def data_end(self, data: Data) -> Step:
        """The DATA reply. The message (possibly a spool file) is released on every way
        out: here, or by the hand-over task when it ends."""
        tx = self.session.transaction
        assert tx is not None, "data_end without a transaction"
        try:
            step = await self._data_stage(tx, data)
        except BaseException:
            data.body.close()
            raise
        if step is not None:
            data.body.close()
            return step
        message = data.body.prepend(self._received() + "".join(
            f"{h}\n" for h in tx.add_headers).encode("utf-8", "surrogateescape"))
        # The hand-over finishes even if the client vanishes meanwhile: shielded, tracked;
        # it closes the message when it ends.
        task = asyncio.ensure_future(self._hand_over(tx, message))
        self.services.track(task)
        try:
            delivered: Delivered = await asyncio.shield(task)
        except asyncio.CancelledError:
            # The session ends (client gone, shutdown deadline) but the hand-over goes on:
            # its summary line is written when it ends, with its real outcome.
            self.session.transaction = None
            task.add_done_callback(lambda t: t.cancelled() or self._handed_over(tx, t.result()))
            raise
        return self._handed_over(tx, delivered)

    async def _data_stage(self, tx: Transaction, data: Data) -> Step | None:
        """The refusal at the end of DATA (size, hops, disk, DATA-stage checks), or None:
        hand the message over."""
        tx.size = data.size
        if data.too_big:
            return self._finish(Step(replies.DATABYTES), "rejected")
        if data.spool_failed:
            # the spool's disk is full (or gone): qmail-queue's answer for the same
            return self._finish(Step(replies.QQ_WRITE_ERROR), "tempfail")
        if data.hops >= self.server.max_hops:
            return self._finish(Step(replies.TOO_MANY_HOPS), "rejected")
        tx.body = data.body
        verdict = await self.services.pipeline.run(Stage.DATA, self.session)
        refusal = self._refusal(verdict)
        if refusal:
            outcome = "tempfail" if refusal.reply.temporary else "rejected"
            return self._finish(refusal, outcome)
        return None

    async def _hand_over(self, tx: Transaction, message: Body) -> Delivered:
        """Delivery.deliver, with an unexpected exception (a bug) turned into a 451; once
        accepted, the `on_accepted` hooks (per-user counting) run before the reply, inside
        this shielded, tracked task: they finish even if the client goes away. The
        message is closed at the end (after the hooks: they may read its headers),
        whatever happens."""
        try:
            try:
                delivered = await self.services.queue_stage.process(self.session, tx, message)
            except Exception:
                log.exception("event=delivery_error session=%s", self.session.session_id)
                return Delivered(False, replies.LOCAL_ERROR)
            if delivered.accepted:
                await self.services.accepted(self.session, tx)
            return delivered
        finally:
            message.close()

    def _handed_over(self, tx: Transaction, delivered: Delivered) -> Step:
        if delivered.accepted:
            return self._finish(Step(delivered.reply), "accepted", delivered.queue_id, tx=tx)
        outcome = "tempfail" if delivered.reply.temporary else "rejected"
        return self._finish(Step(delivered.reply), outcome, tx=tx)

    def tls_started(self) -> None:
        """RFC 3207 4.2: after the handshake, forget everything learnt before it (HELO/EHLO,
        the transaction, AUTH); the client starts over with EHLO."""
        self._end_transaction("aborted")
        s = self.session
        s.tls = True
        s.helo = ""
        s.esmtp = False
        s.auth_user = ""

    def rset(self) -> Step:
        self._end_transaction("aborted")
        return Step(replies.FLUSHED)

    def quit(self) -> Step:
        self._end_transaction("aborted")
        return Step(replies.quit_reply(self.server.greeting), close=True)

    def closed(self) -> None:
        """The connection ended (any way): log an unfinished transaction."""
        self._end_transaction("aborted")

    def timeout(self) -> Step:
        self._end_transaction("aborted")
        return Step(replies.TIMEOUT, close=True)

    def session_expired(self) -> Step:
        """`[server] session_timeout_s` passed while waiting for the client."""
        self._end_transaction("aborted")
        return Step(session_too_long(self.server.hostname), close=True)

    # --- helpers ------------------------------------------------------------------------

    def _exempt(self, addr: str) -> bool:
        local, at, domain = addr.rpartition("@")
        if not at:
            return addr.lower() in EXEMPT_LOCALPARTS
        return local.lower() in EXEMPT_LOCALPARTS and self.services.is_local_domain(domain)

    def _refusal(self, verdict: Verdict) -> Step | None:
        if verdict.action not in (Action.TEMPFAIL, Action.REJECT):
            return None
        reply = verdict.reply or (
            Reply(451, "temporarily refused", "4.7.1")
            if verdict.action is Action.TEMPFAIL
            else Reply(554, "refused", "5.7.1")
        )
        return Step(reply, close=verdict.disconnect)

    def _received(self) -> bytes:
        s = self.session
        if not self.extended:
            proto = "SMTP"  # qmail-smtpd.c smtp_data(): received(..., "SMTP", ...) always
        else:
            proto = "ESMTP" if s.esmtp else "SMTP"
            if s.tls:
                proto += "S"
            if s.auth_user:
                proto += "A"
        return received_header(
            remote_ip=str(s.client_ip),
            remote_host=s.client_host or None,
            remote_info=s.env.get("TCPREMOTEINFO") or None,
            helo=s.helo or None,
            local_host=self.server.hostname,
            protocol=proto,
            when=self.services.clock.now(),
        )

    def _finish(self, step: Step, outcome: str, queue_id: str = "",
                tx: Transaction | None = None) -> Step:
        self._end_transaction(outcome, step.reply.code, queue_id, tx=tx)
        return step

    def _end_transaction(self, outcome: str, code: int = 0, queue_id: str = "",
                         tx: Transaction | None = None) -> None:
        """Emit the one summary line (and store record) of a transaction, then forget it.
        `tx`: one already detached from the session (a hand-over that outlived it)."""
        if tx is None:
            tx = self.session.transaction
            if tx is None:
                return
        if tx is self.session.transaction:
            self.session.transaction = None
        if outcome == "aborted" and not tx.rcpts and not tx.refused:
            return  # MAIL then nothing: not worth a line
        self.session.transactions += 1
        s = self.services
        log_transaction(self.session, tx, outcome=outcome, code=code, queue_id=queue_id,
                        started=self._tx_started, clock=s.clock, metrics=s.metrics,
                        record=s.record)
