"""The server admin's pages, under /admin/: what the CLI's admin commands do, through the
same store modules — domains and their admins (`mailguard domain`, `mailguard role`),
per-IP DNSBL overrides (`mailguard override`), the greylist (`mailguard greylist`),
suspended users and the panic switch (`mailguard user`, `mailguard panic`) and the
accounts (`mailguard account`); the overview also shows the alerts (open and of the
last week) and the qmail queue as `mailguard qmail-watch` read it. Only a login with
the server role ("*") reaches them; every POST logs one line `event=web_admin`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailguard.store.alerts import AlertStore
from mailguard.store.greylist import GreylistStore
from mailguard.store.overrides import OverrideStore
from mailguard.store.queue_readings import QueueReadingStore
from mailguard.store.roles import SERVER, Roles, target_error
from mailguard.store.users import PANIC
from mailguard.store.web_sessions import WebSessionRecord
from mailguard.web import admin_forms, charts
from mailguard.web.forms import FormError

if TYPE_CHECKING:
    from mailguard.web.admin_pages import Admin

PAGE_SIZE = 50
DAY_S = 86400
OVERVIEW = 10  # suspended users on the overview; all of them on /admin/suspended
TRIPLETS = 50


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) + " UTC" if ts else "never"


def age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def routes(admin: Admin) -> list[BaseRoute]:
    ctx = admin.ctx
    pages = admin.pages
    srv = admin.server_admin

    # --- overview, suspended users, panic -------------------------------------------------

    async def overview(request: Request, rec: WebSessionRecord, roles: Roles, *,
                       error: str = "", status: int = 200) -> Response:
        now = ctx.clock.now()
        alerts = AlertStore(ctx.store.db)
        readings = await QueueReadingStore(ctx.store.db).since(now - DAY_S)
        queue_svg = charts.queue_chart("qmail queue, last 24 hours", [
            (r.ts, r.host, r.messages, r.unprocessed) for r in readings]) if readings else ""
        latest = {r.host: r for r in readings}  # oldest first: the last one wins
        return admin.page(request, "admin/index.html", rec, roles, status, current="admin",
                          panic=await admin.users.panic(), error=error,
                          suspended=await admin.users.suspended(limit=OVERVIEW + 1),
                          open_alerts=await alerts.list_open(),
                          recent_alerts=[a for a in await alerts.list_recent(
                              now - 7 * DAY_S, limit=20) if not a.open],
                          queue_svg=queue_svg, queue_latest=sorted(latest.values(),
                                                                   key=lambda r: r.host),
                          when=when, age=age)

    async def show_overview(request: Request, rec: WebSessionRecord, roles: Roles) -> Response:
        return await overview(request, rec, roles)

    async def suspended_page(request: Request, rec: WebSessionRecord, roles: Roles,
                             *, error: str = "", status: int = 200) -> Response:
        after = request.query_params.get("after", "")
        rows = await admin.users.suspended(after=after, limit=PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return admin.page(request, "admin/suspended.html", rec, roles, status,
                          current="admin", suspended=rows, q="", error=error,
                          next_after=rows[-1].user if more else "")

    async def show_suspended(request: Request, rec: WebSessionRecord,
                             roles: Roles) -> Response:
        return await suspended_page(request, rec, roles)

    async def panic(request: Request, rec: WebSessionRecord, roles: Roles) -> Response:
        state = (await admin.form(request)).get("state", "")
        if state not in ("on", "off"):
            return await overview(request, rec, roles, error="choose on or off", status=400)
        await admin.users.set_setting(PANIC, state, ctx.clock.now())
        admin.audit(rec, "panic", state)
        return admin.done("/admin", f"panic-{state}")

    async def unsuspend(request: Request, rec: WebSessionRecord, roles: Roles) -> Response:
        form = await admin.form(request)
        name = form.get("user", "")
        back = "/admin/suspended" if form.get("back") == "/admin/suspended" else "/admin"
        if not await admin.users.unsuspend(name):
            admin.audit(rec, "unsuspend", name, "refused")
            return await overview(request, rec, roles, status=400,
                                  error=f"{name[:100]!r} is not suspended")
        admin.audit(rec, "unsuspend", name)
        return admin.done(back, "unsuspended")

    # --- domains and roles ----------------------------------------------------------------

    async def add_domain(request: Request, rec: WebSessionRecord, roles: Roles) -> Response:
        raw = (await admin.form(request)).get("domain", "")
        try:
            domain = admin_forms.domain_name(raw)
        except FormError as exc:
            admin.audit(rec, "domain_add", raw[:255], "refused")
            return admin.page(request, "admin/domains.html", rec, roles, 400,
                              current="domains", names=[], q="", next_after="",
                              error=str(exc))
        if await ctx.prefs.domain(domain) is None:
            await ctx.prefs.set_domain(domain, ctx.clock.now())
        admin.audit(rec, "domain_add", domain)
        return admin.done(f"/domains/{quote(domain)}", "added")

    async def roles_page(request: Request, rec: WebSessionRecord, roles: Roles, *,
                         error: str = "", status: int = 200) -> Response:
        grants = await admin.roles.list()
        return admin.page(request, "admin/roles.html", rec, roles, status, current="admin",
                          grants=grants, server=SERVER, error=error)

    async def show_roles(request: Request, rec: WebSessionRecord, roles: Roles) -> Response:
        return await roles_page(request, rec, roles)

    async def change_role(request: Request, rec: WebSessionRecord, roles: Roles) -> Response:
        what = str(request.path_params["what"])
        form = await admin.form(request)
        user, domain = form.get("user", ""), form.get("domain", "")
        problem = target_error(user, domain)
        if what not in ("grant", "revoke"):
            return pages.forbidden("not found\n", 404)
        if problem:
            admin.audit(rec, f"role_{what}", user[:320], "refused", domain=domain[:255])
            return await roles_page(request, rec, roles, error=problem, status=400)
        if what == "grant":
            await admin.roles.grant(user, domain, ctx.clock.now())
        elif not await admin.roles.revoke(user, domain):
            admin.audit(rec, "role_revoke", user, "refused", domain=domain)
            return await roles_page(request, rec, roles, status=400,
                                    error=f"{user[:100]!r} does not have that role")
        admin.audit(rec, f"role_{what}", user.strip().lower(), domain=domain.strip().lower())
        done = "granted" if what == "grant" else "revoked"
        back = form.get("back", "")
        if back.startswith("/domains/") and "//" not in back:  # from a domain's page
            return admin.done(back, done)
        return admin.done("/admin/roles", done)

    # --- DNSBL overrides ------------------------------------------------------------------

    async def overrides_page(request: Request, rec: WebSessionRecord, roles: Roles, *,
                             error: str = "", status: int = 200) -> Response:
        now = ctx.clock.now()
        q = admin_forms.search(request.query_params.get("q", ""))
        rows = [o for o in await OverrideStore(ctx.store.db).list() if o.network.startswith(q)]
        items = [{"o": o, "expires": when(o.expires_ts), "expired": o.expired(now),
                  "created": when(o.created_ts)} for o in rows]
        return admin.page(request, "admin/overrides.html", rec, roles, status,
                          current="admin", items=items, q=q, error=error)

    async def show_overrides(request: Request, rec: WebSessionRecord, roles: Roles) -> Response:
        return await overrides_page(request, rec, roles)

    async def change_override(request: Request, rec: WebSessionRecord,
                              roles: Roles) -> Response:
        what = str(request.path_params["what"])
        form = await admin.form(request)
        repo = OverrideStore(ctx.store.db)
        now = ctx.clock.now()
        try:
            if what == "add":
                o = admin_forms.parse_override(form)
                await repo.add(o.network, o.action, reason=o.reason, now=now,
                               expires_ts=now + o.expires_s if o.expires_s else None,
                               created_by=rec.user)
                admin.audit(rec, "override_add", o.network, override=o.action,
                            reason=o.reason, expires_s=o.expires_s)
                return admin.done("/admin/overrides", "added")
            if what == "remove":
                network = form.get("network", "")
                try:
                    gone = await repo.remove(network, now=now)
                except ValueError as exc:
                    raise FormError(str(exc)) from None
                if not gone:
                    raise FormError(f"no override for {network[:100]}")
                admin.audit(rec, "override_remove", network)
                return admin.done("/admin/overrides", "removed")
        except FormError as exc:
            admin.audit(rec, f"override_{what}", form.get("network", "")[:100], "refused")
            return await overrides_page(request, rec, roles, error=str(exc), status=400)
        return pages.forbidden("not found\n", 404)

    # --- greylist -------------------------------------------------------------------------

    async def greylist_page(request: Request, rec: WebSessionRecord, roles: Roles, *,
                            error: str = "", status: int = 200) -> Response:
        cfg = ctx.config.greylist
        repo = GreylistStore(ctx.store.db)
        rows = [{"r": r, "first": when(r.state.first_seen), "last": when(r.state.last_seen),
                 "state": "passed" if r.state.passed_ts is not None
                 else f"pending ({r.state.deferrals} deferrals)"}
                for r in await repo.triplets(TRIPLETS)]
        return admin.page(request, "admin/greylist.html", rec, roles, status,
                          current="admin", stats=await repo.stats(cfg.auto_whitelist_after),
                          rows=rows, cfg=cfg, error=error)

    async def show_greylist(request: Request, rec: WebSessionRecord, roles: Roles) -> Response:
        return await greylist_page(request, rec, roles)

    async def change_greylist(request: Request, rec: WebSessionRecord,
                              roles: Roles) -> Response:
        from mailguard.checks.greylist_rules import allow_key  # noqa: PLC0415

        what = str(request.path_params["what"])
        form = await admin.form(request)
        cfg = ctx.config.greylist
        repo = GreylistStore(ctx.store.db)
        now = ctx.clock.now()
        try:
            if what == "allow":
                if not cfg.auto_whitelist_after:
                    raise FormError("auto_whitelist_after is 0 (client whitelist off): use "
                                    "[greylist] exempt_clients or a DNSBL allow override")
                try:
                    key = allow_key(form.get("client", ""), cfg)
                except ValueError as exc:
                    raise FormError(str(exc)) from None
                await repo.allow(key, cfg.auto_whitelist_after, now)
                admin.audit(rec, "greylist_allow", key)
                return admin.done("/admin/greylist", "allowed")
            if what == "purge":
                older_s = admin_forms.duration(form.get("older_than", "")) or (
                    cfg.max_age_d * 86400)
                triplets, clients = await repo.purge(now, older_s, cfg.retry_window_h * 3600)
                admin.audit(rec, "greylist_purge", f"older_than={older_s}s",
                            triplets=triplets, clients=clients)
                return admin.done("/admin/greylist", "purged")
        except FormError as exc:
            admin.audit(rec, f"greylist_{what}", form.get("client", "")[:100], "refused")
            return await greylist_page(request, rec, roles, error=str(exc), status=400)
        return pages.forbidden("not found\n", 404)

    # --- accounts -------------------------------------------------------------------------

    async def accounts_page(request: Request, rec: WebSessionRecord, roles: Roles, *,
                            error: str = "", status: int = 200) -> Response:
        q = admin_forms.search(request.query_params.get("q", ""))
        after = request.query_params.get("after", "")
        rows = await admin.accounts.page(prefix=q, after=after, limit=PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return admin.page(request, "admin/users.html", rec, roles, status, current="admin",
                          domain="", accounts=rows, suspended=[], q=q, error=error,
                          next_after=rows[-1].address if more else "",
                          base="/admin/accounts", can_delete=True)

    async def show_accounts(request: Request, rec: WebSessionRecord, roles: Roles) -> Response:
        return await accounts_page(request, rec, roles)

    async def change_account(request: Request, rec: WebSessionRecord,
                             roles: Roles) -> Response:
        what = str(request.path_params["what"])
        if what not in ("add", "disable", "enable", "password", "delete"):
            return pages.forbidden("not found\n", 404)
        form = await admin.form(request)
        try:
            address = admin_forms.address(form.get("address", ""), existing=what != "add")
            done = await admin.account_action(rec, roles, what, address, form)
        except FormError as exc:
            admin.audit(rec, f"account_{what}", form.get("address", "")[:320], "refused")
            return await accounts_page(request, rec, roles, error=str(exc), status=400)
        admin.audit(rec, f"account_{what}", address)
        return admin.done("/admin/accounts", done)

    return [
        Route("/admin", srv(show_overview), methods=["GET"]),
        Route("/admin/panic", srv(panic), methods=["POST"]),
        Route("/admin/suspended", srv(show_suspended), methods=["GET"]),
        Route("/admin/unsuspend", srv(unsuspend), methods=["POST"]),
        Route("/admin/domains/add", srv(add_domain), methods=["POST"]),
        Route("/admin/roles", srv(show_roles), methods=["GET"]),
        Route("/admin/roles/{what}", srv(change_role), methods=["POST"]),
        Route("/admin/overrides", srv(show_overrides), methods=["GET"]),
        Route("/admin/overrides/{what}", srv(change_override), methods=["POST"]),
        Route("/admin/greylist", srv(show_greylist), methods=["GET"]),
        Route("/admin/greylist/{what}", srv(change_greylist), methods=["POST"]),
        Route("/admin/accounts", srv(show_accounts), methods=["GET"]),
        Route("/admin/accounts/{what}", srv(change_account), methods=["POST"]),
    ]
