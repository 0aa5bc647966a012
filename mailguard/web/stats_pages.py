"""Mail-flow pages: MRTG-like graphs (day / week / month / year) split by outcome, the
refusals by reason, and Isoqlog-like usage tables (top senders, recipients, domains by
messages and bytes, per day and month, as CSV too).

Who sees what: the server admin every domain and host (or one); a domain admin their
domains (mail received, and sent by their users); a mail user their own mail (received
and what was caught for them). The pages refresh themselves every 5 minutes (a meta
refresh: no JavaScript)."""

from __future__ import annotations

import csv
import io
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailguard.store.stats import DAY, HOUR, StatsStore, UsageRow
from mailguard.store.web_sessions import WebSessionRecord
from mailguard.web import charts

if TYPE_CHECKING:
    from mailguard.store.roles import Roles
    from mailguard.web.app import Pages

REFRESH_S = 300
USAGE_LIMIT = 20
USER_VIEWS = {  # a user's own volume comes from the hourly and daily usage buckets
    "day": charts.View("day", "last 24 hours (hourly totals)", DAY, HOUR, "%H:00"),
    "week": charts.VIEWS["week"],
    "month": charts.VIEWS["month"],
    "year": charts.VIEWS["year"],
}


@dataclass(frozen=True, slots=True)
class Scope:
    """What the request may see: everything (domain ""), one domain, or one user."""

    domain: str
    user: str
    admin_domains: tuple[str, ...]
    server_admin: bool


def scope_of(request: Request, rec: WebSessionRecord, roles: Roles) -> Scope | None:
    """The scope asked for (`?domain=`, or `?user=` for one user's own view), if the
    roles allow it; a plain user's own."""
    asked = request.query_params.get("domain", "").strip().lower()
    mine = tuple(sorted(roles.domains))
    user = request.query_params.get("user", "").strip().lower()
    if user:
        if user != rec.user and not roles.administers(user.rpartition("@")[2]):
            return None
        return Scope("", user, mine, roles.server_admin)
    if roles.server_admin:
        return Scope(asked, "", mine, True)
    if not mine:
        return Scope("", rec.user, (), False) if not asked else None
    if asked and not roles.administers(asked):
        return None
    return Scope(asked or mine[0], "", mine, False)


def _period(request: Request, now: float) -> tuple[str, float, float, int, str]:
    """(period, since, until, resolution, label) of the usage tables: a UTC day
    (`date=YYYY-MM-DD`) or month (`date=YYYY-MM`); today / this month by default."""
    period = "month" if request.query_params.get("period") == "month" else "day"
    date = request.query_params.get("date", "")
    try:
        if period == "day":
            t = time.strptime(date, "%Y-%m-%d") if date else time.gmtime(now)
            since = float(time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, 0))
                          - time.timezone)
            return period, since, since + DAY, HOUR, time.strftime("%Y-%m-%d",
                                                                   time.gmtime(since))
        t = time.strptime(date, "%Y-%m") if date else time.gmtime(now)
    except ValueError:
        t = time.gmtime(now)
    year, month = t.tm_year, t.tm_mon
    since = _utc(year, month)
    until = _utc(year + (month == 12), month % 12 + 1)
    return "month", since, until, DAY, f"{year:04d}-{month:02d}"


def _utc(year: int, month: int) -> float:
    import calendar  # noqa: PLC0415

    return float(calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0)))


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def routes(pages: Pages) -> list[BaseRoute]:
    ctx = pages.ctx

    async def dashboard(request: Request, _token: str, rec: WebSessionRecord) -> Response:
        roles = await ctx.roles_of(rec.user)
        scope = scope_of(request, rec, roles)
        if scope is None:
            return pages.forbidden("forbidden: not an admin of that domain\n")
        stats = StatsStore(ctx.store.db)
        now = ctx.clock.now()
        name = request.query_params.get("view", "day")
        host = request.query_params.get("host", "") if scope.server_admin else ""
        query = {k: v for k, v in (("domain", scope.domain if roles.server_admin or
                                    roles.domains else ""), ("host", host)) if v}
        if scope.user:
            query = {"user": scope.user} if scope.user != rec.user else {}
            view = USER_VIEWS.get(name, USER_VIEWS["day"])
            starts = charts.buckets(view, now)
            since = starts[0]
            got = await stats.usage_series("rcpt", scope.user, view.resolution, since,
                                           now + 1)
            sent = await stats.usage("sender", view.resolution, since, now + 1,
                                     key=scope.user)
            received = sum(r[1] for r in got)
            caught = sum(r[3] for r in got)
            svg = charts.usage_chart(f"Mail for {scope.user}, {view.title}", view, starts,
                                     got)
            return pages.page(request, "stats.html", roles=roles, current="stats",
                              user=rec.user, csrf=rec.csrf, svg=svg, view=view,
                              views=USER_VIEWS, scope=scope,
                              query=urllib.parse.urlencode(query), refresh=REFRESH_S,
                              mine={"received": received, "caught": caught,
                                    "sent": sum(u.messages for u in sent)},
                              totals=[], reasons=[], hosts=[])
        view = charts.VIEWS.get(name, charts.VIEWS["day"])
        starts = charts.buckets(view, now)
        points = await stats.flow(view.resolution, starts[0], now + 1,
                                  domain=scope.domain, host=host)
        series = charts.totals(points, starts)
        what = scope.domain or "all domains"
        svg = charts.flow_chart(f"Messages, {what}{' on ' + host if host else ''}, "
                                f"{view.title}", view, starts, series)
        total = sum(sum(v) for v in series.values())
        totals = [(n, sum(series[n]), 100.0 * sum(series[n]) / total if total else 0.0)
                  for n, _ in charts.SERIES]
        directions: dict[str, int] = {}
        reasons: dict[tuple[str, str], int] = {}
        for p in points:
            directions[p.direction] = directions.get(p.direction, 0) + p.messages
            if p.outcome in ("rejected", "deferred"):
                reasons[(p.outcome, p.reason)] = reasons.get((p.outcome, p.reason), 0) \
                    + p.messages
        return pages.page(request, "stats.html", roles=roles, current="stats",
                          user=rec.user, csrf=rec.csrf, svg=svg, view=view,
                          views=charts.VIEWS, scope=scope, refresh=REFRESH_S,
                          query=urllib.parse.urlencode(query), totals=totals,
                          directions=sorted(directions.items()),
                          reasons=sorted(reasons.items(), key=lambda kv: -kv[1]),
                          hosts=await stats.hosts() if scope.server_admin else [],
                          host=host, mine=None)

    async def usage_rows(request: Request, rec: WebSessionRecord
                         ) -> tuple[Scope, dict[str, Any]] | Response:
        roles = await ctx.roles_of(rec.user)
        scope = scope_of(request, rec, roles)
        if scope is None or scope.user:
            return pages.forbidden("forbidden: usage tables are for admins\n")
        period, since, until, resolution, label = _period(request, ctx.clock.now())
        order = request.query_params.get("order", "messages")
        order = order if order in ("messages", "bytes", "caught") else "messages"
        stats = StatsStore(ctx.store.db)
        tables: dict[str, list[UsageRow]] = {}
        for kind in ("sender", "rcpt", "domain"):
            if kind == "domain" and scope.domain:
                rows = await stats.usage(kind, resolution, since, until, key=scope.domain)
            else:
                rows = await stats.usage(kind, resolution, since, until, order=order,
                                         limit=USAGE_LIMIT, domain=scope.domain)
            tables[kind] = rows
        return scope, {"period": period, "label": label, "order": order, "tables": tables,
                       "roles": roles}

    async def usage(request: Request, _token: str, rec: WebSessionRecord) -> Response:
        got = await usage_rows(request, rec)
        if isinstance(got, Response):
            return got
        scope, values = got
        query = urllib.parse.urlencode({k: v for k, v in (
            ("domain", scope.domain), ("period", values["period"]),
            ("date", values["label"]), ("order", values["order"])) if v})
        return pages.page(request, "usage.html", current="stats", user=rec.user,
                          csrf=rec.csrf, scope=scope, query=query, size=_size, **values)

    async def usage_csv(request: Request, _token: str, rec: WebSessionRecord) -> Response:
        got = await usage_rows(request, rec)
        if isinstance(got, Response):
            return got
        _scope, values = got
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["period", "kind", "key", "messages", "bytes", "caught"])
        tables: dict[str, list[UsageRow]] = values["tables"]
        for kind, rows in tables.items():
            for r in rows:
                writer.writerow([values["label"], kind, _csv_safe(r.key), r.messages,
                                 r.bytes, r.caught])
        name = f"mailguard-usage-{values['label']}.csv"
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    return [
        Route("/stats", pages.logged_in(dashboard), methods=["GET"]),
        Route("/stats/usage", pages.logged_in(usage), methods=["GET"]),
        Route("/stats/usage.csv", pages.logged_in(usage_csv), methods=["GET"]),
    ]


def _csv_safe(value: str) -> str:
    """An address that a spreadsheet would run as a formula gets a leading quote."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value
