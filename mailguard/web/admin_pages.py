"""The domain admin's pages, under /domains/<domain>/: the domain's defaults (filtering,
action, score, whether users may override them), its users (list and search, add,
disable/enable, new password, unsuspend) and a link to its quarantine. A server admin
acts as the admin of every domain. The server admin's own pages are admin_server.py.

Authorization is decided here, never taken from the request: the domain of the URL must
be one the session's user administers (`Roles.administers`), an address in a form must
belong to that domain, and an account holding roles the actor lacks (the server admin,
another domain's admin) is out of reach. Everything goes through the store modules the
CLI uses; every POST logs one line `event=web_admin`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from mailguard.store.accounts import AccountStore
from mailguard.store.prefs import DOMAIN_PREFIX
from mailguard.store.prefs_records import valid_domain
from mailguard.store.roles import Roles, RoleStore
from mailguard.store.users import UserStore
from mailguard.store.web_sessions import WebSessionRecord
from mailguard.web import admin_forms, forms
from mailguard.web.forms import FormError

if TYPE_CHECKING:
    from mailguard.web.app import Pages

log = logging.getLogger("mailguard.web")

PAGE_SIZE = 50
NOTICES = {
    "saved": "Saved. It applies to the next message.",
    "added": "Added.",
    "disabled": "Disabled: the account can no longer log in or send.",
    "enabled": "Enabled again.",
    "password": "The new password is set.",
    "unsuspended": "Unsuspended: the user's mail is accepted again.",
    "deleted": "Deleted.",
    "granted": "Role granted.",
    "revoked": "Role revoked.",
    "removed": "Removed.",
    "allowed": "Allowed.",
    "purged": "Purged.",
    "panic-on": "Panic is ON: relaying is stopped on every MX host.",
    "panic-off": "Panic is off: relaying works again.",
}

AdminHandler = Callable[[Request, WebSessionRecord, Roles], Awaitable[Response]]
DomainHandler = Callable[[Request, WebSessionRecord, Roles, str], Awaitable[Response]]


class Admin:
    """What the admin pages share: the role guards, rendering with the navigation,
    the one log line per action, and the account actions of both faces."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.ctx = pages.ctx

    @property
    def roles(self) -> RoleStore:
        return RoleStore(self.ctx.store.db)

    @property
    def accounts(self) -> AccountStore:
        return AccountStore(self.ctx.store.db)

    @property
    def users(self) -> UserStore:
        return UserStore(self.ctx.store.db)

    # --- guards ---------------------------------------------------------------------------

    def server_admin(self, handler: AdminHandler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request, _token: str, rec: WebSessionRecord) -> Response:
            roles = await self.ctx.roles_of(rec.user)
            if not roles.server_admin:
                return self.refuse(request, rec, "forbidden: for the server admin only\n")
            return await handler(request, rec, roles)

        return self.pages.logged_in(run)

    def any_admin(self, handler: AdminHandler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request, _token: str, rec: WebSessionRecord) -> Response:
            roles = await self.ctx.roles_of(rec.user)
            if not roles.any_admin:
                return self.refuse(request, rec, "forbidden: for domain admins only\n")
            return await handler(request, rec, roles)

        return self.pages.logged_in(run)

    def domain_admin(self, handler: DomainHandler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request, _token: str, rec: WebSessionRecord) -> Response:
            domain = str(request.path_params["domain"]).lower()
            if not valid_domain(domain):  # not even the server admin's: no such page
                return self.pages.forbidden("not found\n", 404)
            roles = await self.ctx.roles_of(rec.user)
            if not roles.administers(domain):
                return self.refuse(request, rec, "forbidden: not an admin of that domain\n")
            return await handler(request, rec, roles, domain)

        return self.pages.logged_in(run)

    def refuse(self, request: Request, rec: WebSessionRecord, text: str) -> Response:
        """403, and for a POST the one log line every admin POST gets."""
        if request.method == "POST":
            self.audit(rec, "post", request.url.path[:300], "forbidden")
        return self.pages.forbidden(text)

    # --- answers --------------------------------------------------------------------------

    def page(self, request: Request, name: str, rec: WebSessionRecord, roles: Roles,
             status: int = 200, **values: Any) -> Response:
        notice = NOTICES.get(request.query_params.get("done", ""), "")
        values.setdefault("notice", notice)
        return self.pages.page(request, name, status, user=rec.user, csrf=rec.csrf,
                               roles=roles, **values)

    @staticmethod
    def done(path: str, what: str, **query: str) -> Response:
        return RedirectResponse(f"{path}?{urlencode({**query, 'done': what})}",
                                status_code=303)

    def audit(self, rec: WebSessionRecord, action: str, target: str,
              result: str = "ok", **extra: object) -> None:
        more = "".join(f" {k}={v!r}" for k, v in extra.items())
        log.info("event=web_admin user=%r action=%s target=%r result=%s%s", rec.user,
                 action, target, result, more)

    @staticmethod
    async def form(request: Request) -> dict[str, str]:
        return {k: str(v) for k, v in (await request.form()).items()}

    # --- the account actions, for the domain's users and the server's accounts -------------

    async def account_action(self, rec: WebSessionRecord, roles: Roles, what: str,
                             address: str, form: dict[str, str]) -> str:
        """Run `what` on the account `address` (already checked to be in reach of the
        domain); the notice key, or FormError. An account holding roles the actor lacks
        is refused (PermissionError)."""
        now = self.ctx.clock.now()
        if what == "add":
            pw = admin_forms.password(form.get("password", ""))
            if not await self.accounts.add(address, await _hash(pw), now):
                raise FormError(f"{address} exists already")
            return "added"
        if what == "unsuspend":
            if not await self.users.unsuspend(address):
                raise FormError(f"{address} is not suspended")
            return "unsuspended"
        if not roles.covers(await self.ctx.roles_of(address)):
            raise PermissionError(address)
        if what == "password":
            pw = admin_forms.password(form.get("password", ""))
            if await self.accounts.get(address) is None:
                raise FormError(f"no account {address}")
            await self.accounts.set_password(address, await _hash(pw), now)
            return "password"
        if what in ("disable", "enable"):
            if not await self.accounts.set_disabled(address, what == "disable"):
                raise FormError(f"no account {address}")
            return f"{what}d"
        if what == "delete" and roles.server_admin:
            if not await self.accounts.delete(address):
                raise FormError(f"no account {address}")
            return "deleted"
        raise LookupError(what)


async def _hash(password: str) -> str:
    from mailguard.auth.users import hash_password  # noqa: PLC0415

    return await asyncio.to_thread(hash_password, password)  # slow on purpose


def routes(pages: Pages) -> list[BaseRoute]:
    from mailguard.web import admin_server  # noqa: PLC0415

    admin = Admin(pages)
    ctx = pages.ctx

    async def domains(request: Request, rec: WebSessionRecord, roles: Roles) -> Response:
        """The domains the user administers; for the server admin every domain of the
        store (searched by prefix, a page at a time) and a form to add one."""
        q = admin_forms.search(request.query_params.get("q", ""))
        after = request.query_params.get("after", "")
        if roles.server_admin:
            rows = await ctx.prefs.domain_page(prefix=q, after=after, limit=PAGE_SIZE + 1)
            names = [r.domain for r in rows]
        else:
            names = sorted(d for d in roles.domains if d.startswith(q) and d > after)
            names = names[:PAGE_SIZE + 1]
        more = len(names) > PAGE_SIZE
        names = names[:PAGE_SIZE]
        return admin.page(request, "admin/domains.html", rec, roles, current="domains",
                          names=names, q=q, next_after=names[-1] if more else "")

    async def domain_page(request: Request, rec: WebSessionRecord, roles: Roles,
                          domain: str, *, error: str = "", status: int = 200) -> Response:
        from mailguard.web.app import DEFAULT_SCORE  # noqa: PLC0415 - app imports us

        row = await ctx.prefs.domain(domain)
        score_rows = await ctx.prefs.prefs(DOMAIN_PREFIX + domain)
        score = next((float(r.value) for r in score_rows
                      if r.preference == forms.SCORE_PREF and _is_number(r.value)), None)
        sensitivity, custom = forms.sensitivity_of(score)
        admins = [g.user for g in await admin.roles.list(domain=domain)]
        quarantine = ctx.quarantine is not None
        return admin.page(
            request, "admin/domain.html", rec, roles, status, current="domains",
            domain=domain, error=error, known=row is not None,
            filtering="on" if row is not None and row.spam_enabled else "off",
            action=row.spam_action if row is not None else "",
            action_choices=admin_forms.domain_actions(quarantine,
                                                      ctx.config.spam.default_action),
            sensitivity=sensitivity, custom_score=custom,
            sensitivity_choices=forms.sensitivity_choices(DEFAULT_SCORE),
            may_override=row is None or row.users_may_override, admins=admins,
            quarantine=quarantine)

    async def show_domain(request: Request, rec: WebSessionRecord, roles: Roles,
                          domain: str) -> Response:
        return await domain_page(request, rec, roles, domain)

    async def save_defaults(request: Request, rec: WebSessionRecord, roles: Roles,
                            domain: str) -> Response:
        form = await admin.form(request)
        try:
            d = admin_forms.parse_domain_defaults(form, quarantine=ctx.quarantine is not None)
        except FormError as exc:
            admin.audit(rec, "domain_defaults", domain, "refused")
            return await domain_page(request, rec, roles, domain, error=str(exc), status=400)
        await ctx.prefs.set_domain(domain, ctx.clock.now(), spam_enabled=d.enabled,
                                   spam_action=d.action, users_may_override=d.users_may_override)
        if d.score is None:
            await ctx.prefs.unset_pref(DOMAIN_PREFIX + domain, forms.SCORE_PREF)
        else:
            await ctx.prefs.set_pref(DOMAIN_PREFIX + domain, forms.SCORE_PREF, f"{d.score:g}")
        admin.audit(rec, "domain_defaults", domain, filtering="on" if d.enabled else "off",
                    spam_action=d.action or "default", score=d.score,
                    users_may_override=d.users_may_override)
        return admin.done(f"/domains/{quote(domain)}", "saved")

    async def users_page(request: Request, rec: WebSessionRecord, roles: Roles,
                         domain: str, *, error: str = "", status: int = 200) -> Response:
        q = admin_forms.search(request.query_params.get("q", ""))
        after = request.query_params.get("after", "")
        rows = await admin.accounts.page(domain=domain, prefix=q, after=after,
                                         limit=PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        suspended = await admin.users.suspended(domain=domain, limit=PAGE_SIZE)
        return admin.page(request, "admin/users.html", rec, roles, status, current="domains",
                          domain=domain, accounts=rows, suspended=suspended, q=q,
                          error=error, next_after=rows[-1].address if more else "",
                          base=f"/domains/{quote(domain)}/users", can_delete=False)

    async def show_users(request: Request, rec: WebSessionRecord, roles: Roles,
                         domain: str) -> Response:
        return await users_page(request, rec, roles, domain)

    async def change_user(request: Request, rec: WebSessionRecord, roles: Roles,
                          domain: str) -> Response:
        what = str(request.path_params["what"])
        if what not in ("add", "disable", "enable", "password", "unsuspend"):
            return pages.forbidden("not found\n", 404)
        form = await admin.form(request)
        raw = form.get("address", "")
        try:
            address = admin_forms.address(raw, domain, existing=what != "add")
        except FormError as exc:
            # an address of another domain in the form: as forbidden as one in the URL
            if "@" in raw and raw.strip().lower().rpartition("@")[2] != domain:
                admin.audit(rec, f"user_{what}", raw[:320], "forbidden", domain=domain)
                return pages.forbidden("forbidden: not an address of that domain\n")
            return await users_page(request, rec, roles, domain, error=str(exc), status=400)
        try:
            done = await admin.account_action(rec, roles, what, address, form)
        except PermissionError:
            admin.audit(rec, f"user_{what}", address, "forbidden")
            return pages.forbidden("forbidden: that account holds roles you do not\n")
        except FormError as exc:
            admin.audit(rec, f"user_{what}", address, "refused")
            return await users_page(request, rec, roles, domain, error=str(exc), status=400)
        admin.audit(rec, f"user_{what}", address)
        return admin.done(f"/domains/{quote(domain)}/users", done)

    dom = admin.domain_admin
    return [
        Route("/domains", admin.any_admin(domains), methods=["GET"]),
        Route("/domains/{domain}", dom(show_domain), methods=["GET"]),
        Route("/domains/{domain}/defaults", dom(save_defaults), methods=["POST"]),
        Route("/domains/{domain}/users", dom(show_users), methods=["GET"]),
        Route("/domains/{domain}/users/{what}", dom(change_user), methods=["POST"]),
        *admin_server.routes(admin),
    ]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

