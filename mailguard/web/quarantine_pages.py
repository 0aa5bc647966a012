"""The quarantine page: a mail user's held messages (date, sender, subject, score, size),
released once through the configured delivery, released with the sender added to the
allow list, or deleted; an admin sees and acts on the domains their role covers.

Every entry is looked up inside the viewer's scope (their own address, a domain they
administer, or everything for the server admin): an id from another scope is "not
found", whatever the form or URL says. Virus copies are listed but only admins release
them."""

from __future__ import annotations

import email.utils
import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from mailguard.store.quarantine import Entry, Scope
from mailguard.store.web_sessions import WebSessionRecord
from mailguard.web import forms

if TYPE_CHECKING:
    from mailguard.web.app import Pages

log = logging.getLogger("mailguard.web")

PAGE_SIZE = 50
COUNT_CAP = 1000  # beyond this the page says "more than 1000"
NOTICES = {
    "released": "Released: the message is on its way to your mailbox.",
    "allowed": "Released, and the sender is now on your allow list.",
    "deleted": "Deleted.",
    "gone": "That message is no longer in the quarantine.",
    "failed": "The message could not be delivered just now; it is still here. "
              "Try again in a few minutes.",
}


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose quarantine a request may see: `scope`, and whether virus copies may be
    released (admins only)."""

    scope: Scope
    admin: bool
    title: str
    query: str  # what the page's links and forms carry to stay in this view


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def sender_address(entry: Entry) -> str:
    """The address to allow for "release and allow": the From: address when it is a
    valid allow-list entry, else the envelope sender; "" when neither is."""
    for candidate in (email.utils.parseaddr(entry.from_header)[1], entry.mail_from):
        try:
            return forms.list_entry("whitelist_from", candidate)[1]
        except forms.FormError:
            continue
    return ""


def routes(pages: Pages) -> list[BaseRoute]:
    ctx = pages.ctx

    async def viewer_of(request: Request, rec: WebSessionRecord) -> Viewer | None:
        """The view asked for (`?domain=` / `?all=1`), if the user's roles allow it."""
        domain = request.query_params.get("domain", "").strip().lower()
        everything = request.query_params.get("all", "") == "1"
        if not domain and not everything:
            return Viewer(Scope(rcpt=rec.user), False, f"Quarantine of {rec.user}", "")
        roles = await ctx.roles_of(rec.user)
        if everything:
            if not roles.server_admin:
                return None
            return Viewer(Scope(), True, "Quarantine of all domains", "all=1")
        if not roles.administers(domain):
            return None
        return Viewer(Scope(domain=domain), True, f"Quarantine of {domain}",
                      urllib.parse.urlencode({"domain": domain}))

    async def listing(request: Request, _token: str, rec: WebSessionRecord) -> Response:
        viewer = await viewer_of(request, rec)
        if viewer is None:
            return pages.forbidden("forbidden: not an admin of that domain\n")
        q = ctx.quarantine
        roles = await ctx.roles_of(rec.user)
        if q is None:
            return pages.page(request, "quarantine.html", enabled=False, user=rec.user,
                              csrf=rec.csrf, viewer=viewer, roles=roles,
                              current="quarantine")
        before = request.query_params.get("before", "")
        before_id = int(before) if before.isdigit() else None
        rows = await q.store.page(viewer.scope, before_id=before_id, limit=PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        total = await q.store.count(viewer.scope, cap=COUNT_CAP + 1)
        items = [{"e": e, "when": time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.ts)),
                  "size": size_text(e.size),
                  "score": f"{e.score:.1f}" if e.score is not None else "",
                  "can_release": e.kind != "virus" or viewer.admin,
                  "allow": sender_address(e) if e.kind == "spam" else ""}
                 for e in rows]
        notice = NOTICES.get(request.query_params.get("done", ""), "")
        return pages.page(request, "quarantine.html", enabled=True, user=rec.user,
                          csrf=rec.csrf, viewer=viewer, items=items, total=total,
                          roles=roles, current="quarantine",
                          total_text=f"More than {COUNT_CAP:,} messages" if total > COUNT_CAP
                          else f"{total} message{'' if total == 1 else 's'}",
                          next_before=rows[-1].id if more and rows else None,
                          notice=notice, days=q.cfg.days)

    async def act(request: Request, _token: str, rec: WebSessionRecord) -> Response:
        viewer = await viewer_of(request, rec)
        if viewer is None:
            return pages.forbidden("forbidden: not an admin of that domain\n")
        q = ctx.quarantine
        if q is None:
            return pages.forbidden("there is no quarantine on this server\n", 404)
        entry_id = int(request.path_params["entry_id"])
        what = request.path_params["what"]
        if what not in ("release", "release-allow", "delete"):
            return pages.forbidden("not found\n", 404)
        back = "/quarantine?" + (viewer.query + "&" if viewer.query else "")
        if what == "delete":
            gone = await q.delete(entry_id, viewer.scope, by=rec.user)
            log.info("event=web_quarantine action=delete user=%r id=%d result=%s",
                     rec.user, entry_id, "ok" if gone else "gone")
            return RedirectResponse(back + ("done=deleted" if gone else "done=gone"),
                                    status_code=303)
        done = await q.release(entry_id, viewer.scope, ctx.delivery, by=rec.user,
                               allow_virus=viewer.admin)
        log.info("event=web_quarantine action=%s user=%r id=%d result=%s", what, rec.user,
                 entry_id, "ok" if done.ok else "gone" if done.delivered is None else "fail")
        if done.delivered is None:
            return RedirectResponse(back + "done=gone", status_code=303)
        if not done.ok:
            return RedirectResponse(back + "done=failed", status_code=303)
        if what == "release-allow" and done.entry is not None:
            sender = sender_address(done.entry)
            rcpt = done.entry.rcpt
            if sender:
                existing = {r.value for r in await ctx.prefs.prefs(rcpt)
                            if r.preference == "whitelist_from"}
                if sender not in existing:
                    await ctx.prefs.set_pref(rcpt, "whitelist_from", sender, add=True)
                return RedirectResponse(back + "done=allowed", status_code=303)
        return RedirectResponse(back + "done=released", status_code=303)

    return [
        Route("/quarantine", pages.logged_in(listing), methods=["GET"]),
        Route("/quarantine/{entry_id:int}/{what:str}", pages.logged_in(act),
              methods=["POST"]),
    ]
