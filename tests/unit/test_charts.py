"""The graph helpers: bucket starts of each view, totals per outcome, whole-number axis
labels, and SVG without scripts."""

from __future__ import annotations

import pytest

from mailguard.store.stats import FlowPoint
from mailguard.web import charts

DAY0 = 1_799_971_200.0  # midnight UTC


def test_buckets_end_with_the_current_one() -> None:
    day = charts.buckets(charts.VIEWS["day"], DAY0 + 3601)
    assert len(day) == 288 and day[-1] == DAY0 + 3600 and day[0] == DAY0 + 3600 - 287 * 300
    year = charts.buckets(charts.VIEWS["year"], DAY0 + 10)
    assert len(year) == 365 and year[-1] == DAY0


def test_totals_fill_gaps_and_filter_directions() -> None:
    starts = [DAY0, DAY0 + 300, DAY0 + 600]
    points = [FlowPoint(DAY0, "in", "delivered", "", 3, 3, 10),
              FlowPoint(DAY0 + 600, "out", "delivered", "", 1, 1, 5),
              FlowPoint(DAY0 + 600, "in", "rejected", "dnsbl", 2, 2, 0),
              FlowPoint(DAY0 - 300, "in", "delivered", "", 9, 9, 0)]  # outside the view
    got = charts.totals(points, starts)
    assert got["delivered"] == [3, 0, 1] and got["rejected"] == [0, 0, 2]
    assert charts.totals(points, starts, ["in"])["delivered"] == [3, 0, 0]


@pytest.mark.parametrize(("top", "ticks"), [
    (0, [0, 1]), (3, [0, 1, 2, 3]), (7, [0, 2, 4, 6, 8]), (12, [0, 5, 10, 15]),
    (99, [0, 20, 40, 60, 80, 100]), (4321, [0, 1000, 2000, 3000, 4000, 5000])])
def test_int_ticks(top: int, ticks: list[int]) -> None:
    assert charts.int_ticks(top) == ticks


def test_chart_is_inline_svg_without_scripts() -> None:
    view = charts.VIEWS["day"]
    starts = charts.buckets(view, DAY0)
    svg = charts.flow_chart("t <b>", view, starts, {"delivered": [1] * len(starts)})
    assert svg.startswith("<svg") and "<script" not in svg
    assert "t &lt;b&gt;" in svg  # the title is escaped
