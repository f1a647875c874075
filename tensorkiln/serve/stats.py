"""Statistics (the KServe statistics extension) and Prometheus metrics with Triton's names.

Each served model version has one ``ModelStats``; the server's ``Metrics`` collector reads them
at scrape time, so the counters and the statistics endpoint can never disagree. Metrics live in
a per-server ``CollectorRegistry`` so several servers can run in one process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


class ModelStats:
    """Counters of one model version; updated from the event loop and instance threads."""

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        self.lock = threading.Lock()
        self.last_inference_ms = 0
        self.inference_count = 0  # rows (batch elements) inferred
        self.execution_count = 0  # batches executed
        self.durations = {k: [0, 0] for k in _DURATIONS}  # count, ns
        self.batch: dict[int, dict[str, list[int]]] = {}  # batch size -> {compute_input/infer/output: [count, ns]}
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)
        self.request_ns = 0  # end-to-end time of successful requests
        self.pending = 0  # requests queued or running

    def success(self, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        with self.lock:
            for k, ns in (("success", total_ns), ("queue", queue_ns), ("compute_input", input_ns),
                          ("compute_infer", infer_ns), ("compute_output", output_ns)):
                d = self.durations[k]
                d[0] += 1
                d[1] += ns
            self.request_ns += total_ns
            self.last_inference_ms = int(time.time() * 1000)

    def failure(self, total_ns: int, reason: str) -> None:
        with self.lock:
            d = self.durations["fail"]
            d[0] += 1
            d[1] += total_ns
            self.failures[reason if reason in self.failures else "OTHER"] += 1

    def execution(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        with self.lock:
            self.inference_count += batch_size
            self.execution_count += 1
            b = self.batch.setdefault(batch_size, {"compute_input": [0, 0], "compute_infer": [0, 0],
                                                   "compute_output": [0, 0]})
            for k, ns in (("compute_input", input_ns), ("compute_infer", infer_ns), ("compute_output", output_ns)):
                b[k][0] += 1
                b[k][1] += ns

    def add_pending(self, n: int) -> None:
        with self.lock:
            self.pending += n

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {
                "name": self.name,
                "version": self.version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {k: {"count": c, "ns": ns} for k, (c, ns) in self.durations.items()},
                "batch_stats": [
                    {"batch_size": bs, **{k: {"count": c, "ns": ns} for k, (c, ns) in d.items()}}
                    for bs, d in sorted(self.batch.items())
                ],
                "memory_usage": [],
            }


class Metrics(Collector):
    """Triton's metric families computed from the live ModelStats, plus histograms."""

    def __init__(self, stats_source: Callable[[], Iterable[ModelStats]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._source = stats_source
        self.registry.register(self)
        self.batch_size = Histogram("tensorkiln_batch_size", "Rows per executed batch", ["model", "version"],
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256),
                                    registry=self.registry)
        self.queue_time = Histogram("tensorkiln_queue_duration_seconds", "Time requests wait in the queue",
                                    ["model", "version"], registry=self.registry,
                                    buckets=(1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1, 2, 5))

    def collect(self) -> Iterable[Metric]:
        fams = {
            "nv_inference_request_success": ("counter", "Number of successful inference requests, all batch sizes"),
            "nv_inference_request_failure": ("counter", "Number of failed inference requests, all batch sizes"),
            "nv_inference_count": ("counter", "Number of inferences performed (does not include cached requests)"),
            "nv_inference_exec_count": ("counter", "Number of model executions performed"),
            "nv_inference_pending_request_count": ("gauge", "Instantaneous number of pending requests awaiting "
                                                   "execution per-model"),
            "nv_inference_request_duration_us": ("counter", "Cumulative inference request duration in microseconds"),
            "nv_inference_queue_duration_us": ("counter", "Cumulative inference queuing duration in microseconds"),
            "nv_inference_compute_input_duration_us": ("counter", "Cumulative compute input duration in microseconds"),
            "nv_inference_compute_infer_duration_us": ("counter", "Cumulative compute inference duration in "
                                                       "microseconds"),
            "nv_inference_compute_output_duration_us": ("counter", "Cumulative inference compute output duration "
                                                        "in microseconds"),
        }
        out = {k: Metric(k, doc, typ) for k, (typ, doc) in fams.items()}
        for s in self._source():
            lab = {"model": s.name, "version": s.version}
            with s.lock:
                out["nv_inference_request_success"].add_sample("nv_inference_request_success", lab,
                                                               s.durations["success"][0])
                for reason, n in s.failures.items():
                    out["nv_inference_request_failure"].add_sample("nv_inference_request_failure",
                                                                   {**lab, "reason": reason}, n)
                out["nv_inference_count"].add_sample("nv_inference_count", lab, s.inference_count)
                out["nv_inference_exec_count"].add_sample("nv_inference_exec_count", lab, s.execution_count)
                out["nv_inference_pending_request_count"].add_sample("nv_inference_pending_request_count", lab,
                                                                     s.pending)
                total_ns = s.request_ns + s.durations["fail"][1]
                out["nv_inference_request_duration_us"].add_sample("nv_inference_request_duration_us", lab,
                                                                   total_ns // 1000)
                for k in ("queue", "compute_input", "compute_infer", "compute_output"):
                    name = f"nv_inference_{k}_duration_us"
                    out[name].add_sample(name, lab, s.durations[k][1] // 1000)
        return list(out.values())

    def exposition(self) -> bytes:
        """Prometheus text format. Counters keep Triton's names (prometheus_client's own writer
        would rename them ``*_total``)."""
        lines: list[str] = []
        for m in self.registry.collect():
            lines.append(f"# HELP {m.name} {_esc_help(m.documentation)}")
            lines.append(f"# TYPE {m.name} {m.type}")
            for smp in m.samples:
                if smp.name.endswith("_created"):
                    continue
                labels = ",".join(f'{k}="{_esc_label(v)}"' for k, v in smp.labels.items())
                lines.append(f"{smp.name}{{{labels}}} {_num(smp.value)}" if labels else f"{smp.name} {_num(smp.value)}")
        return ("\n".join(lines) + "\n").encode()


def _num(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _esc_help(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n")


def _esc_label(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
