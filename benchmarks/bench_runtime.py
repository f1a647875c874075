"""Runtime figures: CPU streams, per-call overhead, memory per extra context.

    python benchmarks/bench_runtime.py [--models resnet50,mobilenetv2] [--seconds 6] [--windows 4]

1. Throughput at batch 1 with streams=2 vs streams=1 (closed loop, 4 requests in flight),
   measured in alternating windows; p50/p99 latency per request.
2. Steady-state per-call overhead for a one-node Add model: tensorkiln Engine.run vs
   onnxruntime InferenceSession.run (median of interleaved rounds).
3. RSS cost of a second execution context on zoo ResNet-50.
"""

from __future__ import annotations

import argparse
import resource
import threading
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

import tensorkiln
from tensorkiln import zoo
from tensorkiln.bench import Runner, measure_side_by_side


def closed_loop(engine: tensorkiln.Engine, feeds: dict[str, np.ndarray], seconds: float, inflight: int
                ) -> tuple[float, list[float]]:
    lat: list[float] = []
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def client() -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            engine.run(feeds)
            dt = (time.perf_counter() - t0) * 1e3
            with lock:
                lat.append(dt)

    t0 = time.perf_counter()
    ths = [threading.Thread(target=client) for _ in range(inflight)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return len(lat) / (time.perf_counter() - t0), lat


def streams_bench(name: str, seconds: float, windows: int) -> None:
    path = zoo.get(name)
    feeds = zoo.sample_inputs(name, batch=1)
    engines = {s: tensorkiln.build(path, streams=s) for s in (1, 2)}
    for e in engines.values():
        for _ in range(3):
            e.run(feeds)
    thr: dict[int, list[float]] = {1: [], 2: []}
    lats: dict[int, list[float]] = {1: [], 2: []}
    for w in range(windows):
        order = (1, 2) if w % 2 == 0 else (2, 1)
        for s in order:
            closed_loop(engines[s], feeds, 0.5, 4)  # warm this configuration's threads
            t, lat = closed_loop(engines[s], feeds, seconds, 4)
            thr[s].append(t)
            lats[s].extend(lat)
    ratio = float(np.median([b / a for a, b in zip(thr[1], thr[2])]))
    for s in (1, 2):
        print(f"{name:12} streams={s}: {np.median(thr[s]):7.1f} inf/s  p50 {np.percentile(lats[s], 50):7.2f} ms  "
              f"p99 {np.percentile(lats[s], 99):7.2f} ms")
    print(f"{name:12} streams=2 / streams=1 throughput: {ratio:.3f}x (median of {windows} window pairs)")
    for e in engines.values():
        e.close()


def overhead_bench(rounds: int) -> None:
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "add",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}
    eng = tensorkiln.build(m)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    n = 200

    def tk() -> None:
        for _ in range(n):
            eng.run(feeds)

    def rt() -> None:
        for _ in range(n):
            sess.run(None, feeds)

    res = measure_side_by_side([Runner("tensorkiln", tk), Runner("onnxruntime", rt)], rounds=rounds,
                               baseline="onnxruntime")
    print(f"per-call overhead (Add of 4 floats): tensorkiln {res.median('tensorkiln') * 1e3 / n:.1f} us, "
          f"onnxruntime {res.median('onnxruntime') * 1e3 / n:.1f} us, ratio {res.ratio('tensorkiln'):.2f}x")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def context_rss() -> None:
    path = zoo.get("resnet50")
    feeds = zoo.sample_inputs("resnet50", batch=1)
    eng = tensorkiln.build(path)
    c1 = eng.create_context()
    for _ in range(3):
        c1.run(feeds)
    base = rss_mb()
    c2 = eng.create_context()
    for _ in range(3):
        c2.run(feeds)
    after = rss_mb()
    plan = eng.memory_plan(feeds)
    print(f"resnet50: RSS with one context {base:.0f} MB, after a second context ran {after:.0f} MB "
          f"(+{after - base:.1f} MB); planned activation peak per running context {plan.peak_bytes / 1e6:.1f} MB; "
          f"weights {eng.weight_bytes() / 1e6:.0f} MB shared")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="resnet50,mobilenetv2")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    for name in args.models.split(","):
        streams_bench(name, args.seconds, args.windows)
    overhead_bench(args.rounds)
    context_rss()


if __name__ == "__main__":
    main()
