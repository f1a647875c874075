"""A small HTTP load generator for the server (benchmarks and overload tests): closed loop at a fixed
concurrency, or open loop at a fixed arrival rate. Binary tensor requests, persistent connections,
stdlib only. Every request carries a unique id that the response must echo.

Bounded by construction: each run stops after ``duration_s`` seconds or ``max_requests`` requests.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Result:
    sent: int = 0
    status: dict[int, int] = field(default_factory=dict)  # HTTP status -> count
    errors: int = 0  # transport errors (no HTTP answer)
    wrong_id: int = 0  # answers carrying another request's id
    latency_ok: list[float] = field(default_factory=list)  # seconds, 200 answers
    latency_rejected: list[float] = field(default_factory=list)  # seconds, 503 answers
    lateness: list[float] = field(default_factory=list)  # open loop: send time - scheduled time
    elapsed: float = 0.0

    @property
    def ok(self) -> int:
        return self.status.get(200, 0)

    def throughput(self, rows: int = 1) -> float:
        return self.ok * rows / self.elapsed if self.elapsed else 0.0

    @staticmethod
    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(np.array(xs), q) * 1e3) if xs else float("nan")

    def merge(self, other: Result) -> None:
        self.sent += other.sent
        for k, v in other.status.items():
            self.status[k] = self.status.get(k, 0) + v
        self.errors += other.errors
        self.wrong_id += other.wrong_id
        self.latency_ok += other.latency_ok
        self.latency_rejected += other.latency_rejected
        self.lateness += other.lateness
        self.elapsed += other.elapsed

    def summary(self) -> dict[str, Any]:
        return {"sent": self.sent, "status": dict(sorted(self.status.items())), "errors": self.errors,
                "wrong_id": self.wrong_id, "elapsed_s": round(self.elapsed, 2),
                "ok_p50_ms": self.pct(self.latency_ok, 50), "ok_p99_ms": self.pct(self.latency_ok, 99),
                "rejected_p99_ms": self.pct(self.latency_rejected, 99)}


def binary_body(inputs: dict[str, np.ndarray], datatypes: dict[str, str], request_id: str) -> tuple[bytes, int]:
    """A KServe v2 request with binary inputs and binary outputs -> (body, JSON header length)."""
    head = json.dumps({"id": request_id, "inputs": [
        {"name": n, "shape": list(a.shape), "datatype": datatypes[n], "parameters": {"binary_data_size": a.nbytes}}
        for n, a in inputs.items()], "parameters": {"binary_data_output": True}}).encode()
    return head + b"".join(np.ascontiguousarray(a).tobytes() for a in inputs.values()), len(head)


class _Conn:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.c: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        for attempt in range(2):
            if self.c is None:
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.c.request("POST", path, body=body, headers=headers)
                r = self.c.getresponse()
                data = r.read()
                return r.status, data, {k.lower(): v for k, v in r.getheaders()}
            except (ConnectionError, http.client.HTTPException):
                self.c.close()
                self.c = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class Target:
    """One model on one server, with the request body template."""

    def __init__(self, url: str, model: str, inputs: dict[str, np.ndarray], datatypes: dict[str, str],
                 timeout: float = 120.0) -> None:
        host, port = url.rsplit(":", 1)
        self.host, self.port, self.timeout = host, int(port), timeout
        self.path = f"/v2/models/{model}/infer"
        self.inputs, self.datatypes = inputs, datatypes
        self._ids = iter(range(1 << 62))
        self._lock = threading.Lock()

    def one(self, conn: _Conn, res: Result) -> None:
        with self._lock:
            rid = f"r{next(self._ids)}"
            res.sent += 1
        body, hl = binary_body(self.inputs, self.datatypes, rid)
        headers = {"Inference-Header-Content-Length": str(hl), "Content-Type": "application/octet-stream"}
        t0 = time.perf_counter()
        try:
            status, data, h = conn.post(self.path, body, headers)
        except (OSError, http.client.HTTPException):
            with self._lock:
                res.errors += 1
            return
        dt = time.perf_counter() - t0
        with self._lock:
            res.status[status] = res.status.get(status, 0) + 1
            if status == 200:
                n = int(h.get("inference-header-content-length", len(data)))
                if json.loads(data[:n]).get("id") != rid:
                    res.wrong_id += 1
                res.latency_ok.append(dt)
            elif status == 503:
                res.latency_rejected.append(dt)


def closed_loop(target: Target, concurrency: int, duration_s: float, max_requests: int = 1_000_000,
                warmup_s: float = 0.0) -> Result:
    """``concurrency`` clients, each sending its next request when the last one is answered."""
    if warmup_s > 0:
        closed_loop(target, concurrency, warmup_s, max_requests)
    res = Result()
    stop = time.monotonic() + duration_s

    def client() -> None:
        conn = _Conn(target.host, target.port, target.timeout)
        while time.monotonic() < stop and res.sent < max_requests:
            target.one(conn, res)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + target.timeout + 5)
    res.elapsed = time.perf_counter() - t0
    return res


def open_loop(target: Target, rate: float, duration_s: float, workers: int = 128,
              max_requests: int = 1_000_000) -> Result:
    """Requests at ``rate`` per second on a fixed schedule, whether or not earlier ones were answered."""
    res = Result()
    q: queue.SimpleQueue[float | None] = queue.SimpleQueue()

    def worker() -> None:
        conn = _Conn(target.host, target.port, target.timeout)
        while True:
            sched = q.get()
            if sched is None:
                return
            res.lateness.append(time.perf_counter() - sched)
            target.one(conn, res)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    n = min(int(rate * duration_s), max_requests)
    for i in range(n):
        sched = t0 + i / rate
        delay = sched - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        q.put(sched)
    for _ in threads:
        q.put(None)
    for t in threads:
        t.join(target.timeout + 5)
    res.elapsed = time.perf_counter() - t0
    return res


class ServerProcess:
    """``tensorkiln serve REPO`` in a subprocess on ephemeral loopback ports (so its RSS is its own)."""

    def __init__(self, repo: str, *args: str, start_timeout: float = 600.0, env: dict[str, str] | None = None) -> None:
        import os
        import re
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "tensorkiln", "serve", repo, "--host", "127.0.0.1", "--http-port", "0",
               "--grpc-port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {}), "COLUMNS": "200"})
        self.http_url = self.grpc_url = ""
        self.log: list[str] = []
        deadline = time.monotonic() + start_timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("server exited at start:\n" + "".join(self.log))
            self.log.append(line)
            m = re.search(r"(HTTP|gRPC) on (\S+:\d+)", line)
            if m and m.group(1) == "HTTP":
                self.http_url = m.group(2)
            elif m:
                self.grpc_url = m.group(2)
            if "metrics on" in line:
                break
        else:
            self.stop()
            raise TimeoutError("server did not start")
        threading.Thread(target=self._drain_output, daemon=True).start()

    def _drain_output(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if len(self.log) < 10_000:
                self.log.append(line)

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stats(self, model: str) -> dict[str, Any]:
        host, port = self.http_url.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        c.request("GET", f"/v2/models/{model}/stats")
        return json.loads(c.getresponse().read())["model_stats"][0]

    def stop(self, timeout: float = 60.0) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except Exception:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)
