"""Mail-flow graphs as inline SVG, drawn on the server by pygal (no JavaScript, no
internet access, no image files): MRTG's day / week / month / year views.

Pure functions of the store's buckets, so the pages and the tests see the same numbers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pygal
from pygal.style import Style

from mailguard.store.stats import DAY, FIVE_MIN, HOUR, FlowPoint


@dataclass(frozen=True, slots=True)
class View:
    """One MRTG-like view: how far back, and the bucket size it reads."""

    name: str
    title: str
    span_s: int
    resolution: int
    label_format: str


VIEWS = {
    "day": View("day", "last 24 hours (5-minute totals)", DAY, FIVE_MIN, "%H:%M"),
    "week": View("week", "last 7 days (hourly totals)", 7 * DAY, HOUR, "%a %H:00"),
    "month": View("month", "last 31 days (daily totals)", 31 * DAY, DAY, "%d %b"),
    "year": View("year", "last 365 days (daily totals)", 365 * DAY, DAY, "%d %b %Y"),
}
# outcome → colour (readable on white, distinguishable without relying on red/green only)
SERIES = (("delivered", "#2e7d32"), ("quarantined", "#f9a825"), ("deleted", "#6d4c41"),
          ("rejected", "#c62828"), ("deferred", "#1565c0"), ("aborted", "#9e9e9e"))
STYLE = Style(background="white", plot_background="white", foreground="#222",
              foreground_strong="#111", foreground_subtle="#666", font_family="sans-serif",
              colors=tuple(c for _, c in SERIES), label_font_size=20,
              major_label_font_size=20, legend_font_size=22, title_font_size=22)
# drawn small and scaled by the browser: readable on a phone, sharp on a desktop
WIDTH, HEIGHT = 520, 420


def buckets(view: View, until: float) -> list[float]:
    """The bucket starts the view shows, oldest first, ending with the current one."""
    last = until - until % view.resolution
    count = view.span_s // view.resolution
    return [last - i * view.resolution for i in range(count - 1, -1, -1)]


def totals(points: Sequence[FlowPoint], starts: Sequence[float],
           directions: Sequence[str] = ()) -> dict[str, list[int]]:
    """Messages per outcome per bucket (zeros where nothing happened)."""
    index = {s: i for i, s in enumerate(starts)}
    out = {name: [0] * len(starts) for name, _ in SERIES}
    for p in points:
        i = index.get(p.start_ts)
        if i is None or p.outcome not in out or (directions and p.direction not in directions):
            continue
        out[p.outcome][i] += p.messages
    return out


def flow_chart(title: str, view: View, starts: Sequence[float],
               series: dict[str, list[int]]) -> str:
    """A stacked bar chart, one bar per bucket, as an <svg> element."""
    chart = pygal.StackedBar(
        style=STYLE, width=WIDTH, height=HEIGHT, js=[], disable_xml_declaration=True,
        show_minor_x_labels=False, x_label_rotation=30, legend_at_bottom=True,
        legend_at_bottom_columns=2, title=title, print_values=False, spacing=0,
        margin=10, truncate_label=-1, show_y_guides=True, include_x_axis=True,
        explicit_size=False, no_data_text="no mail in this period")
    labels = [time.strftime(view.label_format, time.gmtime(s)) for s in starts]
    chart.x_labels = labels
    step = max(1, len(labels) // 6)
    chart.x_labels_major = labels[::step]
    for name, _colour in SERIES:
        values = series.get(name, [])
        chart.add(name, values if any(values) else [None] * len(values))
    stacked = [sum(v[i] for v in series.values()) for i in range(len(starts))]
    chart.y_labels = int_ticks(max(stacked, default=0))
    return _no_scripts(str(chart.render(is_unicode=True)))


def int_ticks(top: int) -> list[int]:
    """About five whole-number y labels from 0 to at least `top` (messages are counted,
    never fractions): steps of 1, 2, 5, 10, 20, 50…"""
    step, factors = 1, (2, 2.5, 2)
    i = 0
    while top / step > 5:
        step = int(step * factors[i % 3])
        i += 1
    return list(range(0, max(top, 1) + step, step))


def _no_scripts(svg: str) -> str:
    """pygal always embeds a <script> with its tooltip configuration; the pages run no
    JavaScript (and their CSP would block it), so it goes."""
    return _SCRIPT.sub("", svg)


_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.DOTALL | re.IGNORECASE)


def usage_chart(title: str, view: View, starts: Sequence[float],
                rows: Sequence[tuple[float, int, int, int]]) -> str:
    """One user's or domain's accepted and caught messages per bucket."""
    index = {s: i for i, s in enumerate(starts)}
    accepted, caught = [0] * len(starts), [0] * len(starts)
    for start, messages, _bytes, held in rows:
        i = index.get(start)
        if i is not None:
            accepted[i] += messages
            caught[i] += held
    style = Style(**{**STYLE.to_dict(), "colors": ("#2e7d32", "#c62828")})
    chart = pygal.Bar(style=style, width=WIDTH, height=HEIGHT, js=[],
                      disable_xml_declaration=True, show_minor_x_labels=False,
                      x_label_rotation=30, legend_at_bottom=True, title=title, margin=10,
                      explicit_size=False, no_data_text="no mail in this period")
    labels = [time.strftime(view.label_format, time.gmtime(s)) for s in starts]
    chart.x_labels = labels
    chart.x_labels_major = labels[::max(1, len(labels) // 6)]
    chart.add("received", accepted)
    chart.add("caught (refused, quarantined, deleted)", caught)
    chart.y_labels = int_ticks(max([*accepted, *caught], default=0))
    return _no_scripts(str(chart.render(is_unicode=True)))


def queue_chart(title: str, readings: Sequence[tuple[float, str, int, int]]) -> str:
    """The qmail queue over the last 24 hours: messages and not yet preprocessed, one
    line each per host, from `mailguard qmail-watch` readings (ts, host, messages,
    unprocessed), oldest first."""
    chart = pygal.DateTimeLine(
        style=STYLE, width=WIDTH, height=HEIGHT, js=[], disable_xml_declaration=True,
        x_label_rotation=30, legend_at_bottom=True, legend_at_bottom_columns=1,
        title=title, margin=10, explicit_size=False, show_dots=False,
        x_value_formatter=lambda d: d.strftime("%H:%M"),
        no_data_text="no readings in the last 24 hours")
    import datetime  # noqa: PLC0415

    hosts = sorted({h for _, h, _, _ in readings})
    top = 0
    for host in hosts:
        mine = [r for r in readings if r[1] == host]
        when = [datetime.datetime.fromtimestamp(r[0], datetime.UTC) for r in mine]
        chart.add(f"{host}: in queue", list(zip(when, (r[2] for r in mine), strict=True)))
        chart.add(f"{host}: not preprocessed",
                  list(zip(when, (r[3] for r in mine), strict=True)))
        top = max([top, *(r[2] for r in mine)])
    chart.y_labels = int_ticks(top)
    return _no_scripts(str(chart.render(is_unicode=True)))
