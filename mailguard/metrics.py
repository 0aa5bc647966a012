"""The daemon's metrics on prometheus-client, owned by whoever builds them (one
`CollectorRegistry` per `Metrics`, never the library's global REGISTRY).

Counters, gauges and histograms are kept here, keyed by name and labels, and exposed
through a collector of our own, so a series may be touched before it is declared and the
label names of a series come from its call (`inc(name, check="spf")`).

Several worker processes: give each worker's `Metrics` the same `multiprocess_dir`.
Every change is then also written to that process's files in the directory, in
prometheus-client's multi-process format (`counter_<pid>.db`, `gauge_<mode>_<pid>.db`,
`histogram_<pid>.db`), and `render()` in any worker aggregates all of them with the
library's `MultiProcessCollector`: counters and histograms add up (also those of workers
that have exited), gauges follow their `aggregate` mode (`livesum` for open connections,
`livemax` by default). The supervisor empties the directory before it starts the
workers (`prepare_multiprocess_dir`) and calls `process_dead(pid)` when one exits. A
`Metrics` belongs to the process that made it: build it after the fork."""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what GET /metrics answers with
KINDS = ("counter", "gauge", "histogram")
# gauges across worker processes (prometheus-client's multiprocess modes); "live*" forget
# the gauges of a process that has exited
AGGREGATES = ("livesum", "livemax", "livemin", "sum", "max", "min")
# seconds: from a DNS answer (ms) to a slow spamd scan or a long SMTP session (minutes)
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)

LabelKey = tuple[tuple[str, str], ...]


@dataclass
class _Hist:
    counts: list[float]  # per bucket (not cumulative), the last one is +Inf
    total: float = 0.0


@dataclass
class _Family:
    kind: str
    help_text: str
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    aggregate: str = "livemax"
    values: dict[LabelKey, float] = field(default_factory=dict)
    hists: dict[LabelKey, _Hist] = field(default_factory=dict)
    # the help text in this process's file keys, fixed at the first write: a key that
    # changed would count the same series twice
    file_help: str | None = None


class _Store(Protocol):
    """The part of prometheus-client's MmapedDict we use (it has no annotations)."""

    def write_value(self, key: str, value: float, timestamp: float) -> None: ...

    def close(self) -> None: ...


class Metrics:
    """Labelled counters, gauges and histograms. `render()` gives the Prometheus text
    exposition (aggregated over the worker processes when `multiprocess_dir` is set)."""

    def __init__(self, multiprocess_dir: str | Path | None = None) -> None:
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self._dir = str(multiprocess_dir) if multiprocess_dir else None
        self._pid = os.getpid()
        self._files: dict[str, _Store] = {}
        if self._dir is None:
            self.registry.register(_Collector(self))
        else:
            if not os.path.isdir(self._dir):
                raise ValueError(f"metrics directory {self._dir} is not a directory")
            MultiProcessCollector(self.registry, path=self._dir)  # type: ignore[no-untyped-call]

    # --- declaring ---------------------------------------------------------------------

    def declare(self, name: str, kind: str, help_text: str, *,
                buckets: Sequence[float] = DEFAULT_BUCKETS, aggregate: str = "livemax") -> None:
        """Name a series' kind and help (idempotent). `buckets`: a histogram's upper
        bounds in seconds; `aggregate`: how a gauge adds up over worker processes."""
        if kind not in KINDS:
            raise ValueError(f"metric {name}: unknown kind {kind!r}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"metric {name}: unknown aggregate {aggregate!r}")
        bounds = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        with self._lock:
            fam = self._families.get(name)
            if fam is None or (not fam.values and not fam.hists):
                self._families[name] = _Family(kind, help_text, bounds, aggregate)
            else:
                fam.help_text = help_text

    # --- updating ----------------------------------------------------------------------

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` to a counter (or a gauge)."""
        key = _key(labels)
        with self._lock:
            fam = self._family(name, "counter")
            value = fam.values.get(key, 0.0) + amount
            fam.values[key] = value
            self._write(name, fam, key, value)

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        key = _key(labels)
        with self._lock:
            fam = self._family(name, "gauge")
            fam.values[key] = value
            self._write(name, fam, key, value)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """Record one observation (a duration in seconds) in a histogram."""
        key = _key(labels)
        with self._lock:
            fam = self._family(name, "histogram")
            hist = fam.hists.get(key)
            bounds = _bucket_labels(fam.buckets)
            i = next((n for n, b in enumerate(fam.buckets) if seconds <= b), len(fam.buckets))
            if hist is None:
                hist = fam.hists[key] = _Hist([0.0] * len(bounds))
                written = range(len(bounds))  # every bucket, as the library does
            else:
                written = range(i, i + 1)
            hist.counts[i] += 1
            hist.total += seconds
            if self._dir is not None:
                for n in written:
                    self._put(name, fam, f"{name}_bucket", (*key, ("le", bounds[n])),
                              hist.counts[n])
                self._put(name, fam, f"{name}_sum", key, hist.total)

    # --- reading -----------------------------------------------------------------------

    def value(self, name: str, **labels: str) -> float:
        """This process's value of a counter or gauge; a histogram's observation count."""
        with self._lock:
            fam = self._families.get(name)
            if fam is None:
                return 0.0
            key = _key(labels)
            if fam.kind == "histogram":
                hist = fam.hists.get(key)
                return sum(hist.counts) if hist else 0.0
            return fam.values.get(key, 0.0)

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        """This process's series of a counter or gauge: (labels, value) pairs."""
        with self._lock:
            fam = self._families.get(name)
            return [(dict(k), v) for k, v in sorted(fam.values.items())] if fam else []

    def render(self) -> str:
        """The text exposition (Prometheus 0.0.4) of every series."""
        return self.exposition().decode()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        """Close this process's files (multi-process mode); the values stay readable."""
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()

    # --- inside ------------------------------------------------------------------------

    def _family(self, name: str, kind: str) -> _Family:
        fam = self._families.get(name)
        if fam is None:  # used before (or without) a declaration
            fam = self._families[name] = _Family(kind, name)
        return fam

    def _write(self, name: str, fam: _Family, key: LabelKey, value: float) -> None:
        if self._dir is None:
            return
        sample = _counter_sample(name) if fam.kind == "counter" else name
        self._put(name, fam, sample, key, value)

    def _put(self, name: str, fam: _Family, sample: str, labels: LabelKey, value: float) -> None:
        assert self._dir is not None
        if os.getpid() != self._pid:
            raise RuntimeError("a Metrics object is used in a process that did not make it")
        kind = fam.kind
        typ = f"gauge_{fam.aggregate}" if kind == "gauge" else kind
        f = self._files.get(typ)
        if f is None:
            path = os.path.join(self._dir, f"{typ}_{self._pid}.db")
            f = self._files[typ] = cast(_Store, MmapedDict(path))  # type: ignore[no-untyped-call]
        base = _counter_sample(name)[: -len("_total")] if kind == "counter" else name
        names = [k for k, _ in labels]
        values = [v for _, v in labels]
        if fam.file_help is None:
            fam.file_help = fam.help_text
        f.write_value(mmap_key(base, sample, names, values, fam.file_help), value, 0.0)

    def _collect(self) -> Iterable[Metric]:
        with self._lock:
            families = sorted(self._families.items())
            out: list[Metric] = []
            for name, fam in families:
                if fam.kind == "counter":
                    sample = _counter_sample(name)
                    m = Metric(sample[: -len("_total")], fam.help_text, "counter")
                    for key, value in sorted(fam.values.items()):
                        m.add_sample(sample, dict(key), value)
                elif fam.kind == "gauge":
                    m = Metric(name, fam.help_text, "gauge")
                    for key, value in sorted(fam.values.items()):
                        m.add_sample(name, dict(key), value)
                else:
                    m = Metric(name, fam.help_text, "histogram")
                    bounds = _bucket_labels(fam.buckets)
                    for key, hist in sorted(fam.hists.items()):
                        acc = 0.0
                        for le, count in zip(bounds, hist.counts, strict=True):
                            acc += count
                            m.add_sample(f"{name}_bucket", {**dict(key), "le": le}, acc)
                        m.add_sample(f"{name}_count", dict(key), acc)
                        m.add_sample(f"{name}_sum", dict(key), hist.total)
                out.append(m)
            return out


class _Collector:
    """The registry's view of one Metrics (single-process mode)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics._collect()


def _key(labels: dict[str, str]) -> LabelKey:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def _counter_sample(name: str) -> str:
    """A counter's series name: Prometheus counters end in `_total`."""
    return name if name.endswith("_total") else f"{name}_total"


@functools.cache
def _bucket_labels(buckets: tuple[float, ...]) -> tuple[str, ...]:
    """The `le` labels of `buckets`; cached: formatting them was 3% of the daemon's time
    when done per observation."""
    return (*(floatToGoString(b) for b in buckets), "+Inf")  # type: ignore[no-untyped-call]


def prepare_multiprocess_dir(path: str | Path) -> None:
    """Create `path` and remove the files of earlier runs (call before starting workers)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    for f in p.glob("*.db"):
        f.unlink()


def process_dead(pid: int, path: str | Path) -> None:
    """Forget the live gauges of a worker that has exited (its counters stay counted)."""
    mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
