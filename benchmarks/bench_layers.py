"""Per-layer time, tensorkiln vs onnxruntime, side by side: which layers hold a network back.

For each model, both runtimes are profiled in alternating rounds in one process (tensorkiln's
per-step profile, onnxruntime's ``enable_profiling`` node events). onnxruntime's nodes are
mapped back to the ONNX nodes they came from (by node or output-tensor name), then to the
tensorkiln step that covers those nodes. Prints per op type and the steps with the largest
gap; onnxruntime nodes that map to no ONNX node (its NCHWc layout reorders) are reported
as such. onnxruntime's per-node times include its profiler's overhead, so its layer sum is
larger than its (unprofiled) end-to-end time; compare layers by ratio, not by difference alone.

    python benchmarks/bench_layers.py [--models resnet50,googlenet,vgg19,alexnet] [--batch 1]
        [--rounds 7] [--top 12] [--tactics pins.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

import tensorkiln
from tensorkiln import zoo


def onnx_names(path: Path) -> dict[str, str]:
    """Node name and each output tensor name → ONNX node name."""
    m = onnx.load(str(path), load_external_data=False)
    out: dict[str, str] = {}
    for n in m.graph.node:
        out[n.name] = n.name
        for o in n.output:
            out.setdefault(o, n.name)
    return out


def ort_event_node(name: str, lookup: dict[str, str]) -> str | None:
    base = name.removesuffix("_kernel_time")
    for cand in (base, re.sub(r"_nchwc$", "", base), re.sub(r"_(nchwc|token_\d+)$", "", base)):
        if cand in lookup:
            return lookup[cand]
    return None


def profile_ort(sess: ort.InferenceSession) -> dict[str, float]:
    """Ends profiling; event name → median duration (ms) over the profiled runs."""
    path = sess.end_profiling()
    try:
        events = json.loads(Path(path).read_text())
    finally:
        os.unlink(path)
    per: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            per[e["name"]].append(e["dur"] / 1e3)
    return {k: float(np.median(v)) for k, v in per.items()}


def compare(name: str, batch: int, rounds: int, threads: int, top: int, tactics: str | None = None) -> None:
    path = zoo.get(name)
    feeds = zoo.sample_inputs(name, batch=batch)
    profile = {k: {"min": v.shape, "opt": v.shape, "max": v.shape} for k, v in feeds.items()}
    engine = tensorkiln.build(path, shapes=profile, tactics_file=tactics)  # tactics timed at this batch
    tmp = tempfile.mkdtemp()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tmp) / "ort")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    # end-to-end times come from a second, unprofiled session: profiling slows onnxruntime down
    # (measured ≈ 15 % on ResNet-50 batch 1), and its per-node times carry that overhead too
    plain_so = ort.SessionOptions()
    plain_so.intra_op_num_threads = threads
    plain = ort.InferenceSession(str(path), plain_so, providers=["CPUExecutionProvider"])
    steps: list[list[float]] = []
    e2e: dict[str, list[float]] = {"tensorkiln": [], "onnxruntime": []}
    prof: list[dict[str, Any]] = []
    for k in range(rounds):
        for who in (("tk", "ort") if k % 2 == 0 else ("ort", "tk")):
            if who == "tk":
                prof = engine.profile(feeds, runs=1)
                steps.append([p["ms"] for p in prof])
                engine.run(feeds)
                t0 = time.perf_counter()
                engine.run(feeds)
                e2e["tensorkiln"].append((time.perf_counter() - t0) * 1e3)
            else:
                sess.run(None, feeds)  # profiled
                plain.run(None, feeds)
                t0 = time.perf_counter()
                plain.run(None, feeds)
                e2e["onnxruntime"].append((time.perf_counter() - t0) * 1e3)
    ort_ms = profile_ort(sess)
    tk_ms = np.median(np.array(steps), axis=0)
    lookup = onnx_names(path)
    origin_step: dict[str, int] = {}
    for i, p in enumerate(prof):
        for o in p["origin"] or [p["name"]]:
            origin_step[o] = i
    ort_per_step: dict[int, float] = defaultdict(float)
    unmapped: dict[str, float] = defaultdict(float)
    for ev, ms in ort_ms.items():
        node = ort_event_node(ev, lookup)
        if node is not None and node in origin_step:
            ort_per_step[origin_step[node]] += ms
        else:
            unmapped[ev.removesuffix("_kernel_time")] += ms
    ratio = float(np.median([a / b for a, b in zip(e2e["tensorkiln"], e2e["onnxruntime"])]))
    print(f"\n== {name} batch {batch}, {threads} threads, {rounds} rounds; load {os.getloadavg()[0]:.1f}")
    print(f"end to end (median): tensorkiln {np.median(e2e['tensorkiln']):.2f} ms, onnxruntime "
          f"{np.median(e2e['onnxruntime']):.2f} ms, ratio {ratio:.3f}")
    print(f"sum of profiled layers: tensorkiln {tk_ms.sum():.2f} ms, onnxruntime "
          f"{sum(ort_per_step.values()) + sum(unmapped.values()):.2f} ms "
          f"(of which {sum(unmapped.values()):.2f} ms in onnxruntime nodes with no ONNX origin)")
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for i, p in enumerate(prof):
        key = p["op"].split("::")[-1]
        by_op[key][0] += float(tk_ms[i])
        by_op[key][1] += ort_per_step.get(i, 0.0)
        by_op[key][2] += 1
    print(f"{'op':22} {'steps':>5} {'tk ms':>8} {'ort ms':>8} {'tk/ort':>7}")
    for op, (a, b, n) in sorted(by_op.items(), key=lambda kv: -kv[1][0]):
        print(f"{op:22} {n:5d} {a:8.2f} {b:8.2f} {a / b if b else float('nan'):7.2f}")
    if unmapped:
        print(f"{'(ort-only nodes)':22} {len(unmapped):5d} {0.0:8.2f} {sum(unmapped.values()):8.2f}")
    print(f"largest gaps (tensorkiln − onnxruntime), top {top}:")
    gaps = sorted(range(len(prof)), key=lambda i: -(tk_ms[i] - ort_per_step.get(i, 0.0)))
    for i in gaps[:top]:
        p = prof[i]
        o = ort_per_step.get(i, 0.0)
        tactic = engine.steps()[i]["tactic"] or "-"
        print(f"  step {i:3d} {p['op'].split('::')[-1]:14} {tactic:13} tk {tk_ms[i]:7.3f} ort {o:7.3f} ms  "
              f"{', '.join(p['origin'])[:80]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,googlenet,vgg19,alexnet")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--tactics", default=None, help="JSON {node: tactic} to pin instead of tuning")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        compare(name, args.batch, args.rounds, args.threads, args.top, args.tactics)


if __name__ == "__main__":
    main()
