"""`mailguard web`: the page where mail users log in with their address and password and
set their own spam filtering (Starlette, Jinja2 templates, forms parsed by
python-multipart; served by uvicorn, see cli/web.py).

Sessions live in the store (any web host of the store serves them); the cookie carries
only a random token (`HttpOnly`, `SameSite=Strict`, `Secure` unless configured off for
plain-HTTP testing) and is replaced at every login. Every form carries the session's
CSRF token; the login form a token of its own (double-submit cookie). Logins are
checked by the same backend as SMTP AUTH and throttled per IP and per account through
the store, counted before the password is checked. Every preference is written where
spamd and the QUEUE stage read it (store.prefs): it applies to the next message."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from mailguard.auth.base import Authenticator
from mailguard.clock import Clock
from mailguard.config import Config
from mailguard.delivery.base import Delivery
from mailguard.delivery.methods import build_delivery
from mailguard.errors import TemporaryError
from mailguard.quarantine import QuarantineService
from mailguard.store.prefs import DOMAIN_PREFIX, PrefsStore
from mailguard.store.prefs_records import DomainPrefs
from mailguard.store.repo import Store
from mailguard.store.roles import Roles, RoleStore
from mailguard.store.web_sessions import WebSessionRecord, WebSessionStore
from mailguard.web import admin_pages, forms, quarantine_pages, stats_pages

log = logging.getLogger("mailguard.web")

SESSION_COOKIE = "mg_session"
LOGIN_COOKIE = "mg_login"  # the login form's CSRF token (double submit)
DEFAULT_SCORE = 5.0  # SpamAssassin's required_score when nobody set one
SAVED = "Saved. It applies to the next message you receive."
LOCKED = ("Your domain's administrator decides spam filtering, sensitivity and what "
          "happens to spam for everyone in the domain; only the language is yours to set.")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class WebContext:
    """What every request handler needs, once per process; the store is opened when the
    server starts (`lifespan`) and closed when it stops."""

    config: Config
    clock: Clock
    templates: Jinja2Templates
    _store: Store | None = None
    _auth: Authenticator | None = None
    _quarantine: QuarantineService | None = None
    _delivery: Delivery | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        from mailguard.auth.backends import build_authenticator  # noqa: PLC0415

        store = await Store.open(self.config.store.url)
        self._store = store
        self._auth = build_authenticator(self.config, store.db, self.clock)
        if self.config.quarantine.enabled:
            self._quarantine = QuarantineService(self.config.quarantine, store.db,
                                                 self.clock)
        try:
            yield
        finally:
            self._store = None
            await store.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise TemporaryError("web: the store is not open")
        return self._store

    @property
    def auth(self) -> Authenticator:
        if self._auth is None:
            raise TemporaryError("web: the store is not open")
        return self._auth

    @property
    def quarantine(self) -> QuarantineService | None:
        """The quarantine of `[quarantine]`; None when the server has none."""
        return self._quarantine

    @property
    def delivery(self) -> Delivery:
        """The plain hand-over of `[delivery]` (quarantine releases), built on first use."""
        if self._delivery is None:
            self._delivery = build_delivery(self.config, self.clock)
        return self._delivery

    async def roles_of(self, user: str) -> Roles:
        """The web roles of `user` (domain admin, server admin) from the store."""
        return await RoleStore(self.store.db).roles_of(user)

    @property
    def sessions(self) -> WebSessionStore:
        return WebSessionStore(self.store.db)

    @property
    def prefs(self) -> PrefsStore:
        return PrefsStore(self.store.db)


def client_ip(request: Request, trusted: tuple[str, ...]) -> str:
    """The peer, or the last address a trusted proxy put in X-Forwarded-For."""
    peer = request.client.host if request.client else "0.0.0.0"
    if not trusted:
        return peer
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    nets = [ipaddress.ip_network(n, strict=False) for n in trusted]
    if any(addr.version == n.version and addr in n for n in nets):
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[-1].strip()
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(forwarded))
    return peer


Handler = Callable[[Request, str, WebSessionRecord], Awaitable[Response]]


class Pages:
    """What every page module uses: rendering with the security headers, cookies, the
    session of a request and the `logged_in` guard (live session; CSRF on POST)."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.web

    def page(self, request: Request, name: str, status: int = 200,
             **values: Any) -> Response:
        values.setdefault("hostname", self.ctx.config.server.hostname)
        response = self.ctx.templates.TemplateResponse(request, name, values,
                                                       status_code=status)
        response.headers.update(HEADERS)
        return response

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                            secure=self.cfg.cookie_secure, samesite="strict")

    async def session_of(self, request: Request) -> tuple[str, WebSessionRecord] | None:
        token = request.cookies.get(SESSION_COOKIE, "")
        if not token:
            return None
        rec = await self.ctx.sessions.get(token, self.ctx.clock.now(),
                                          idle_s=self.cfg.session_idle_s,
                                          max_s=self.cfg.session_max_s)
        return (token, rec) if rec is not None else None

    @staticmethod
    def to_login() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @staticmethod
    def forbidden(text: str = "forbidden\n", status: int = 403) -> Response:
        return Response(text, status_code=status, media_type="text/plain", headers=HEADERS)

    def logged_in(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Only with a live session; a POST only with the session's CSRF token."""

        async def run(request: Request) -> Response:
            found = await self.session_of(request)
            if found is None:
                return self.to_login()
            token, rec = found
            if request.method == "POST":
                form = await request.form()
                if not hmac.compare_digest(str(form.get("csrf", "")), rec.csrf):
                    return self.forbidden(
                        "forbidden: the form does not belong to this session\n")
            return await handler(request, token, rec)

        return run


def build_app(ctx: WebContext) -> Starlette:
    cfg = ctx.config.web
    pages = Pages(ctx)
    page = pages.page
    set_cookie = pages.set_cookie
    session_of = pages.session_of
    to_login = pages.to_login
    logged_in = pages.logged_in

    async def login_form(request: Request, error: str = "", address: str = "",
                         status: int = 200) -> Response:
        token = secrets.token_urlsafe(24)
        response = page(request, "login.html", status, csrf=token, error=error,
                        address=address)
        set_cookie(response, LOGIN_COOKIE, token, 3600)
        return response

    async def login(request: Request) -> Response:
        if request.method == "GET":
            if await session_of(request) is not None:
                return RedirectResponse("/", status_code=303)
            return await login_form(request)
        form = await request.form()
        address = str(form.get("address", "")).strip().lower()[:320]
        password = str(form.get("password", ""))
        sent, expected = str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(sent, expected):
            return await login_form(request, "The form expired: please log in again.",
                                    address, 403)
        ip = client_ip(request, cfg.trusted_proxies)
        now = ctx.clock.now()
        account_key = f"user:{address}"
        attempt = await ctx.sessions.begin_login(
            {f"ip:{ip}": cfg.max_failures_per_ip, account_key: cfg.max_failures_per_account},
            now, cfg.login_window_s)
        if attempt is None:
            log.warning("event=web_login result=throttled user=%r client=%s", address, ip)
            minutes = max(1, cfg.login_window_s // 60)
            return await login_form(
                request, f"Too many failed logins. Try again in {minutes} minutes.",
                address, 429)
        user = await ctx.auth.verify(address, password, client_ip=ip) if address else None
        await ctx.sessions.end_login(attempt, success=user is not None,
                                     account_key=account_key, now=now)
        if user is None:
            log.info("event=web_login result=fail user=%r client=%s", address, ip)
            return await login_form(request, "Wrong address or password.", address, 401)
        old = request.cookies.get(SESSION_COOKIE, "")
        if old:  # whatever session the browser had ends here: a fresh one per login
            await ctx.sessions.delete(old)
        token, _ = await ctx.sessions.create(user.lower(), now)
        log.info("event=web_login result=ok user=%r client=%s", user, ip)
        response = RedirectResponse("/", status_code=303)
        set_cookie(response, SESSION_COOKIE, token, cfg.session_max_s)
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    async def settings_page(request: Request, rec: WebSessionRecord, *, notice: str = "",
                            error: str = "", status: int = 200) -> Response:
        user = rec.user
        own = await ctx.prefs.user(user)
        domain = await ctx.prefs.domain(user.rpartition("@")[2])
        spam_cfg = ctx.config.spam
        domain_on = "on" if domain is not None and domain.spam_enabled else "off"
        domain_action = (domain.spam_action if domain else "") or spam_cfg.default_action
        rows = await ctx.prefs.prefs(user)
        score = next((float(r.value) for r in rows if r.preference == forms.SCORE_PREF
                      and _is_number(r.value)), None)
        sensitivity, custom = forms.sensitivity_of(score)
        filtering = "" if own is None or own.spam_enabled is None else (
            "on" if own.spam_enabled else "off")
        lists = [(kind, title, [r.value for r in rows if r.preference == kind])
                 for kind, title in forms.LIST_KINDS.items()]
        # a domain whose users may not override: its values shown, not offered
        locked = domain is not None and not domain.users_may_override
        domain_says = await _domain_says(ctx, domain, domain_on, domain_action) if locked else {}
        return page(request, "settings.html", status, user=user, csrf=rec.csrf,
                    locked=locked, domain_says=domain_says, roles=await ctx.roles_of(user),
                    current="settings",
                    notice=notice, error=error, filtering=filtering,
                    filtering_choices=forms.with_domain(forms.FILTERING, domain_on),
                    sensitivity=sensitivity, custom_score=custom,
                    sensitivity_choices=forms.sensitivity_choices(DEFAULT_SCORE),
                    action=(own.spam_action or "") if own else "",
                    action_choices=forms.with_domain(forms.actions(ctx.quarantine is not None),
                                                     domain_action),
                    language=(own.language or "") if own else "",
                    language_choices=forms.LANGUAGES, lists=lists)

    async def home(request: Request, _token: str, rec: WebSessionRecord) -> Response:
        notice = SAVED if request.query_params.get("saved") else ""
        return await settings_page(request, rec, notice=notice)

    async def save_settings(request: Request, _token: str, rec: WebSessionRecord) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        try:
            s = forms.parse_settings(form, quarantine=ctx.quarantine is not None)
        except forms.FormError as exc:
            return await settings_page(request, rec, error=str(exc), status=400)
        domain = await ctx.prefs.domain(rec.user.rpartition("@")[2])
        if domain is not None and not domain.users_may_override:
            if s.filtering or s.action or s.score is not None:
                return await settings_page(request, rec, status=403, error=LOCKED)
            await ctx.prefs.set_user(rec.user, ctx.clock.now(), language=s.language or None)
            log.info("event=web_settings user=%r language=%s (domain decides the rest)",
                     rec.user, s.language or "domain")
            return RedirectResponse("/?saved=1", status_code=303)
        enabled = None if s.filtering == "" else s.filtering == "on"
        await ctx.prefs.set_user(rec.user, ctx.clock.now(), spam_enabled=enabled,
                                 spam_action=s.action or None, language=s.language or None)
        if s.score is None:
            await ctx.prefs.unset_pref(rec.user, forms.SCORE_PREF)
        else:
            await ctx.prefs.set_pref(rec.user, forms.SCORE_PREF, f"{s.score:g}")
        log.info("event=web_settings user=%r filtering=%s score=%s action=%s language=%s",
                 rec.user, s.filtering or "domain", s.score, s.action or "domain",
                 s.language or "domain")
        return RedirectResponse("/?saved=1", status_code=303)

    async def change_list(request: Request, _token: str, rec: WebSessionRecord) -> Response:
        form = await request.form()
        adding = request.url.path.endswith("/add")
        try:
            pref, value = forms.list_entry(str(form.get("kind", "")), str(form.get("entry", "")))
        except forms.FormError as exc:
            return await settings_page(request, rec, error=str(exc), status=400)
        if adding:
            existing = {r.value for r in await ctx.prefs.prefs(rec.user) if r.preference == pref}
            if value not in existing:
                await ctx.prefs.set_pref(rec.user, pref, value, add=True)
        else:
            await ctx.prefs.unset_pref(rec.user, pref, value)
        log.info("event=web_list user=%r list=%s %s=%r", rec.user, pref,
                 "add" if adding else "remove", value)
        return RedirectResponse("/?saved=1", status_code=303)

    async def logout(request: Request, token: str, rec: WebSessionRecord) -> Response:
        await ctx.sessions.delete(token)
        log.info("event=web_logout user=%r", rec.user)
        return to_login()

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.error("event=web_error path=%s error=%r", request.url.path, str(exc))
        return Response("The mail settings are unavailable right now; try again in a "
                        "minute.\n", status_code=503, media_type="text/plain",
                        headers=HEADERS)

    routes = [
        Route("/login", login, methods=["GET", "POST"]),
        Route("/", logged_in(home), methods=["GET"]),
        Route("/settings", logged_in(save_settings), methods=["POST"]),
        Route("/lists/add", logged_in(change_list), methods=["POST"]),
        Route("/lists/remove", logged_in(change_list), methods=["POST"]),
        Route("/logout", logged_in(logout), methods=["POST"]),
        *quarantine_pages.routes(pages),
        *admin_pages.routes(pages),
        *stats_pages.routes(pages),
    ]
    return Starlette(routes=routes, exception_handlers={TemporaryError: unavailable},
                     lifespan=ctx.lifespan)


async def _domain_says(ctx: WebContext, domain: DomainPrefs | None, on: str,
                       action: str) -> dict[str, str]:
    """The domain's filtering, sensitivity and action in words, for a user who may not
    change them."""
    name = domain.domain if domain is not None else ""
    rows = await ctx.prefs.prefs(DOMAIN_PREFIX + name) if name else []
    score = next((r.value for r in rows if r.preference == forms.SCORE_PREF
                  and _is_number(r.value)), f"{DEFAULT_SCORE:g}")
    actions = dict(forms.actions(ctx.quarantine is not None))
    return {"filtering": on, "score": score, "action": actions.get(action, action)}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


TEMPLATES = Path(__file__).parent / "templates"


def templates() -> Jinja2Templates:
    return Jinja2Templates(directory=str(TEMPLATES))
