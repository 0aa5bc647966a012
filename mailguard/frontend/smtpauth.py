"""SMTP AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN: what is advertised, the
challenge/response exchange and the decision. Credentials are checked by a backend
(mailguard.auth); failed logins are delayed and counted per client IP, and too many close
the connection. One SmtpAuth per daemon, shared by every session.

The count that decides is the store's (`store.auth_attempts`), shared by every worker and
MX host on the database; an attempt is reserved there before the backend sees it. This
process's own `FailureCounter` is only a first gate that spares the store a round trip
for an address this process already knows to be locked. A store that cannot count
answers 454 without asking the backend (fail closed: docs/auth-tls.md)."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable

from mailguard.auth.base import Authenticator
from mailguard.auth.limiter import FailureCounter
from mailguard.clock import Clock
from mailguard.config import Config
from mailguard.context import Session
from mailguard.errors import TemporaryError
from mailguard.frontend import replies
from mailguard.frontend.conversation import Step
from mailguard.metrics import Metrics
from mailguard.settings.auth import AuthConfig
from mailguard.store.auth_attempts import AuthAttemptStore, window_no
from mailguard.store.repo import Store
from mailguard.verdict import Reply

log = logging.getLogger("mailguard.auth")

# Sends "334 <challenge>" and returns the client's answer line (no CRLF), or None when the
# line was too long.
Ask = Callable[[str], Awaitable[str | None]]

LOGIN_USER = base64.b64encode(b"Username:").decode()  # the LOGIN mechanism's prompts
LOGIN_PASSWORD = base64.b64encode(b"Password:").decode()


class _Abort(Exception):
    """The exchange ends with this reply (cancelled, undecodable): not a failed login."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


def decode_response(line: str | None) -> str:
    """One client response: base64 of UTF-8 text; "=" is the empty response, "*" cancels."""
    if line is None:
        raise _Abort(replies.AUTH_UNDECODABLE)
    line = line.strip()
    if line == "*":
        raise _Abort(replies.AUTH_CANCELLED)
    if line == "=":
        return ""
    try:
        return base64.b64decode(line, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _Abort(replies.AUTH_UNDECODABLE) from None


def parse_plain(message: str) -> tuple[str, str, str]:
    """RFC 4616: authzid NUL authcid NUL passwd → (authzid, authcid, passwd)."""
    parts = message.split("\0")
    if len(parts) != 3:
        raise _Abort(replies.AUTH_UNDECODABLE)
    return parts[0], parts[1], parts[2]


def _q(value: str) -> str:
    """A logfmt value: quoted, non-printable characters escaped."""
    text = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text) + '"'


class SmtpAuth:
    """AUTH for every session of a daemon."""

    def __init__(self, config: AuthConfig, backend: Authenticator, clock: Clock,
                 metrics: Metrics, attempts: AuthAttemptStore | None = None) -> None:
        self.config = config
        self.attempts = attempts  # the shared count; None = this process's memory only
        self._purged_window = -1
        self.backend = backend
        self.clock = clock
        self.metrics = metrics
        self.mechanisms = tuple(dict.fromkeys(m.upper() for m in config.mechanisms))
        self.failures = FailureCounter(
            config.max_failures_per_ip, config.failure_window_s, config.tracked_ips
        )
        metrics.declare("mailguard_auth_total", "counter", "SMTP AUTH attempts by result")

    def offered(self, session: Session) -> bool:
        return self.config.enabled and (session.tls or not self.config.require_tls)

    def ehlo_keywords(self, session: Session) -> list[str]:
        """The EHLO line for AUTH, when it may be used now (after STARTTLS by default)."""
        return [f"AUTH {' '.join(self.mechanisms)}"] if self.offered(session) else []

    async def command(self, session: Session, arg: str, ask: Ask) -> Step:
        """The whole AUTH command: checks, exchange, verification, reply."""
        if not self.config.enabled:
            return Step(replies.UNIMPLEMENTED)
        if session.auth_user:
            return Step(replies.AUTH_ALREADY)
        if not self.offered(session):
            return Step(replies.AUTH_NEEDS_TLS)
        if session.transaction is not None:
            return Step(replies.AUTH_IN_TRANSACTION)
        mech, _, initial = arg.strip().partition(" ")
        mech = mech.upper()
        if not mech:
            return Step(replies.AUTH_SYNTAX)
        if mech not in self.mechanisms:
            return Step(replies.AUTH_MECHANISM)
        ip = str(session.client_ip)
        if self.failures.blocked(ip, self.clock.monotonic()):
            self._record(session, mech, "", "locked")
            return Step(replies.AUTH_TOO_MANY, close=True)
        try:
            user, password = await self._exchange(mech, initial.strip(), ask)
        except _Abort as exc:
            return Step(exc.reply)
        # Count the attempt before verifying it: parallel sessions from one IP must not
        # all reach the backend while the first failures are still being verified.
        if not self.failures.begin(ip, self.clock.monotonic()):
            self._record(session, mech, user, "locked")
            return Step(replies.AUTH_TOO_MANY, close=True)
        try:
            window, counted = await self._reserve(ip)
        except TemporaryError as exc:  # fail closed: no count, no verification
            self.failures.end(ip, self.clock.monotonic(), failed=False)
            self._record(session, mech, user, "tempfail", str(exc))
            return Step(replies.AUTH_TEMPORARY)
        except BaseException:  # cancelled (client gone, shutdown): nothing was verified
            self.failures.end(ip, self.clock.monotonic(), failed=False)
            raise
        if counted is None:
            self.failures.end(ip, self.clock.monotonic(), failed=False)
            self._record(session, mech, user, "locked")
            return Step(replies.AUTH_TOO_MANY, close=True)
        failed = True
        try:
            identity = (
                await self.backend.verify(user, password, client_ip=ip)
                if user and password
                else None
            )
            failed = not identity
        except TemporaryError as exc:
            failed = False
            self._record(session, mech, user, "tempfail", str(exc))
            return Step(replies.AUTH_TEMPORARY)
        finally:
            failures = self.failures.end(ip, self.clock.monotonic(), failed=failed)
            if not failed:
                await self._release(ip, window)
        failures = max(failures, counted)
        if identity:
            session.auth_user = identity
            self._record(session, mech, user, "ok")
            return Step(replies.AUTH_OK)
        await self.clock.sleep(self.config.failure_delay_s)  # slows guessing down
        if failures >= self.config.max_failures_per_ip:
            self._record(session, mech, user, "locked")
            return Step(replies.AUTH_TOO_MANY, close=True)
        self._record(session, mech, user, "fail")
        return Step(replies.AUTH_FAILED)

    async def _reserve(self, ip: str) -> tuple[int, int | None]:
        """(window, attempts counted with this one) from the shared store, or (window,
        None) when the limit is reached. Without a store: this process's count."""
        if self.attempts is None:
            return 0, self.failures.count(ip, self.clock.monotonic()) + 1
        window = window_no(self.clock.now(), self.config.failure_window_s)
        if window != self._purged_window:  # once per window and process: drop old rows
            self._purged_window = window
            try:
                await self.attempts.purge(window - 1)
            except TemporaryError as exc:
                log.warning("event=auth_purge_failed error=%s", _q(str(exc)))
        return window, await self.attempts.reserve(ip, window,
                                                   self.config.max_failures_per_ip)

    async def _release(self, ip: str, window: int) -> None:
        """Give the store reservation back; a failure leaves it counted (until the window
        passes), which errs on the side of the limit."""
        if self.attempts is None:
            return
        try:
            await self.attempts.release(ip, window)
        except TemporaryError as exc:
            log.warning("event=auth_release_failed client=%s error=%s", ip, _q(str(exc)))

    async def _exchange(self, mech: str, initial: str, ask: Ask) -> tuple[str, str]:
        """(username, password) from the client; an authorization identity other than
        the user's own is not allowed, which makes the login fail (empty password)."""
        if mech == "PLAIN":
            message = decode_response(initial if initial else await ask(""))
            authzid, user, password = parse_plain(message)
            if authzid and authzid != user:
                return user, ""
            return user, password
        user = decode_response(initial) if initial else decode_response(await ask(LOGIN_USER))
        password = decode_response(await ask(LOGIN_PASSWORD))
        return user, password

    def _record(self, session: Session, mech: str, user: str, result: str,
                error: str = "") -> None:
        """One log line per attempt (never the password) and the metric."""
        self.metrics.inc("mailguard_auth_total", result=result)
        level = logging.WARNING if result == "tempfail" else logging.INFO
        extra = f" error={_q(error)}" if error else ""
        log.log(level, "event=auth session=%s client=%s mechanism=%s user=%s backend=%s "
                "result=%s%s", session.session_id, session.client_ip, mech, _q(user),
                self.backend.name, result, extra)


def build_smtp_auth(
    config: Config, store: Store, clock: Clock, metrics: Metrics
) -> SmtpAuth | None:
    """The daemon's SmtpAuth from `[auth]`, or None when AUTH is off."""
    cfg = config.auth
    if not cfg.enabled:
        return None
    from mailguard.auth.backends import build_authenticator  # noqa: PLC0415

    backend = build_authenticator(config, store.db, clock)
    return SmtpAuth(cfg, backend, clock, metrics, AuthAttemptStore(store.db))
