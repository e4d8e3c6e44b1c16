"""Inference statistics per model version, exported as Prometheus metrics with Triton's names.

One ``VersionStats`` per (model, version) lives as long as the server (counters stay monotonic across
unload and reload). ``TritonCollector`` turns them into metric families for a ``prometheus_client``
registry; ``render`` writes the text exposition format. Counters keep Triton's names exactly
(``nv_inference_count``, not ``nv_inference_count_total``) so dashboards written for Triton work.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

COUNTERS = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences performed (does not include cached requests)",
    "nv_inference_exec_count": "Number of model executions performed (does not include cached requests)",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds",
    "nv_inference_queue_duration_us": "Cumulative inference queuing duration in microseconds",
    "nv_inference_compute_input_duration_us": "Cumulative compute input duration in microseconds",
    "nv_inference_compute_infer_duration_us": "Cumulative compute inference duration in microseconds",
    "nv_inference_compute_output_duration_us": "Cumulative inference compute output duration in microseconds",
}
PENDING = "nv_inference_pending_request_count"


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


class VersionStats:
    """Counters of one model version; every method is thread-safe."""

    def __init__(self, model: str, version: str) -> None:
        self.model, self.version = model, version
        self._lock = threading.Lock()
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.pending = 0
        self.batches: dict[int, BatchStats] = {}

    def queued(self, delta: int) -> None:
        with self._lock:
            self.pending += delta

    def record_success(self, batch: int, request_ns: int, queue_ns: int, input_ns: int, infer_ns: int,
                       output_ns: int) -> None:
        with self._lock:
            self.success.add(request_ns)
            self.queue.add(queue_ns)
            self.compute_input.add(input_ns)
            self.compute_infer.add(infer_ns)
            self.compute_output.add(output_ns)
            self.inference_count += batch
            self.last_inference_ms = int(time.time() * 1000)

    def record_failure(self, request_ns: int) -> None:
        with self._lock:
            self.fail.add(request_ns)

    def record_execution(self, batch: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        with self._lock:
            self.execution_count += 1
            b = self.batches.setdefault(batch, BatchStats())
            b.compute_input.add(input_ns)
            b.compute_infer.add(infer_ns)
            b.compute_output.add(output_ns)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {
                "nv_inference_request_success": self.success.count,
                "nv_inference_request_failure": self.fail.count,
                "nv_inference_count": self.inference_count,
                "nv_inference_exec_count": self.execution_count,
                "nv_inference_request_duration_us": self.success.ns // 1000,
                "nv_inference_queue_duration_us": self.queue.ns // 1000,
                "nv_inference_compute_input_duration_us": self.compute_input.ns // 1000,
                "nv_inference_compute_infer_duration_us": self.compute_infer.ns // 1000,
                "nv_inference_compute_output_duration_us": self.compute_output.ns // 1000,
                PENDING: self.pending,
            }

    def to_json(self) -> dict:
        """The statistics extension's JSON for this version (as Triton's ``/v2/models/<m>/stats``)."""
        with self._lock:
            return {
                "name": self.model, "version": self.version, "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count, "execution_count": self.execution_count,
                "inference_stats": {
                    "success": self.success.to_json(), "fail": self.fail.to_json(), "queue": self.queue.to_json(),
                    "compute_input": self.compute_input.to_json(), "compute_infer": self.compute_infer.to_json(),
                    "compute_output": self.compute_output.to_json(),
                    "cache_hit": {"count": 0, "ns": 0}, "cache_miss": {"count": 0, "ns": 0}},
                "batch_stats": [{"batch_size": bs, "compute_input": b.compute_input.to_json(),
                                 "compute_infer": b.compute_infer.to_json(),
                                 "compute_output": b.compute_output.to_json()}
                                for bs, b in sorted(self.batches.items())],
            }


class StatsTable:
    """All ``VersionStats`` of a server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str], VersionStats] = {}

    def get(self, model: str, version: str) -> VersionStats:
        with self._lock:
            key = (model, version)
            if key not in self._stats:
                self._stats[key] = VersionStats(model, version)
            return self._stats[key]

    def all(self) -> list[VersionStats]:
        with self._lock:
            return [self._stats[k] for k in sorted(self._stats)]


class TritonCollector(Collector):
    def __init__(self, table: StatsTable) -> None:
        self.table = table

    def collect(self):
        rows = [(s.model, s.version, s.counters()) for s in self.table.all()]
        for name, doc in COUNTERS.items():
            m = Metric(name, doc, "counter")
            for model, version, c in rows:
                m.add_sample(name, {"model": model, "version": version}, c[name])
            yield m
        g = GaugeMetricFamily(PENDING, "Instantaneous number of pending requests awaiting execution per-model.",
                              labels=["model", "version"])
        for model, version, c in rows:
            g.add_metric([model, version], c[PENDING])
        yield g


def make_registry(table: StatsTable) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(TritonCollector(table))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text format. prometheus_client names a counter family ``<name>_total`` in its HELP and
    TYPE lines; Triton's counters have no such suffix, so those two lines are renamed back to match the
    samples."""
    text = generate_latest(registry).decode()
    for name in COUNTERS:
        text = text.replace(f"# HELP {name}_total ", f"# HELP {name} ").replace(
            f"# TYPE {name}_total counter", f"# TYPE {name} counter")
    return text.encode()
