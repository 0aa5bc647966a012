"""Metrics on prometheus-client: the exposition parses with the library's own parser,
histograms are cumulative, two Metrics share nothing, and in multi-process mode the
values of real worker processes add up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mailguard.metrics import Metrics, prepare_multiprocess_dir, process_dead

ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert isinstance(s, Sample)
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def one(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


def types(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_counters_gauges_histograms_parse() -> None:
    m = Metrics()
    m.declare("mailguard_x_total", "counter", "x things")
    m.declare("mailguard_lat_seconds", "histogram", "latency", buckets=(0.1, 1.0))
    m.inc("mailguard_x_total", check="spf")
    m.inc("mailguard_x_total", 2, check="spf")
    m.inc("mailguard_undeclared")  # a counter used without a declaration still exposes
    m.set("mailguard_up", 1.0, zone="bl.test")
    for seconds in (0.05, 0.5, 0.7, 3.0):
        m.observe("mailguard_lat_seconds", seconds, check="spf")
    text = m.render()
    assert types(text) == {"mailguard_x": "counter", "mailguard_undeclared": "counter",
                           "mailguard_up": "gauge", "mailguard_lat_seconds": "histogram"}
    assert one(text, "mailguard_x_total", check="spf") == 3
    assert one(text, "mailguard_undeclared_total") == 1
    assert one(text, "mailguard_up", zone="bl.test") == 1
    # cumulative buckets, +Inf = count, sum of the observations
    assert one(text, "mailguard_lat_seconds_bucket", check="spf", le="0.1") == 1
    assert one(text, "mailguard_lat_seconds_bucket", check="spf", le="1.0") == 3
    assert one(text, "mailguard_lat_seconds_bucket", check="spf", le="+Inf") == 4
    assert one(text, "mailguard_lat_seconds_count", check="spf") == 4
    assert one(text, "mailguard_lat_seconds_sum", check="spf") == pytest.approx(4.25)
    assert m.value("mailguard_x_total", check="spf") == 3
    assert m.value("mailguard_lat_seconds", check="spf") == 4  # a histogram's count
    assert m.value("mailguard_x_total", check="other") == 0
    assert "# HELP mailguard_x_total x things" in text


def test_two_metrics_objects_share_nothing() -> None:
    a, b = Metrics(), Metrics()
    a.inc("mailguard_a_total")
    assert a.registry is not b.registry
    assert "mailguard_a_total" not in b.render()
    assert b.value("mailguard_a_total") == 0


def test_declare_rejects_unknown_kinds_and_modes() -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="kind"):
        m.declare("x", "summary", "no")
    with pytest.raises(ValueError, match="aggregate"):
        m.declare("x", "gauge", "no", aggregate="average")


WORKER = textwrap.dedent("""
    import sys
    from mailguard.metrics import Metrics
    m = Metrics(sys.argv[1])
    m.declare("mailguard_open", "gauge", "open sessions", aggregate="livesum")
    m.declare("mailguard_lat_seconds", "histogram", "latency", buckets=(0.1, 1.0))
    n = int(sys.argv[2])
    for _ in range(n):
        m.inc("mailguard_done_total", outcome="accepted")
        m.observe("mailguard_lat_seconds", 0.5, check="spf")
    m.set("mailguard_open", n)
    m.close()
    print("ok")
""")


def run_worker(directory: Path, n: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(directory), str(n)],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def test_multiprocess_values_of_real_workers_add_up(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    prepare_multiprocess_dir(directory)
    workers = [run_worker(directory, 3), run_worker(directory, 4)]
    for w in workers:
        out, _ = w.communicate(timeout=60)
        assert w.returncode == 0 and out.strip() == "ok"
    # the process serving /metrics has values of its own too
    front = Metrics(directory)
    front.inc("mailguard_done_total", outcome="accepted")
    text = front.render()
    assert one(text, "mailguard_done_total", outcome="accepted") == 8
    assert one(text, "mailguard_lat_seconds_count", check="spf") == 7
    assert one(text, "mailguard_lat_seconds_bucket", check="spf", le="0.1") == 0
    assert one(text, "mailguard_lat_seconds_bucket", check="spf", le="1.0") == 7
    assert one(text, "mailguard_lat_seconds_sum", check="spf") == pytest.approx(3.5)
    assert one(text, "mailguard_open") == 7  # livesum of 3 + 4
    assert types(text)["mailguard_lat_seconds"] == "histogram"
    # a worker exits for good: its live gauge goes, its counts stay
    process_dead(workers[0].pid, directory)
    text = front.render()
    assert one(text, "mailguard_open") == 4
    assert one(text, "mailguard_done_total", outcome="accepted") == 8
    front.close()
    # a new run starts from nothing
    prepare_multiprocess_dir(directory)
    assert "mailguard_done_total" not in Metrics(directory).render()


def test_multiprocess_series_used_before_its_declaration_counts_once(tmp_path: Path) -> None:
    m = Metrics(tmp_path)
    m.inc("mailguard_early_total")
    m.declare("mailguard_early_total", "counter", "declared late")
    m.inc("mailguard_early_total")
    assert one(m.render(), "mailguard_early_total") == 2
    m.close()


def test_multiprocess_needs_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        Metrics(tmp_path / "missing")
