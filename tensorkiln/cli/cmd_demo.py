"""tensorkiln demo: zoo ResNet-50 → engine → check against onnxruntime → latency."""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="resnet50", help="zoo network to use (default resnet50)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per runtime")


def _median_ms(fn, runs: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 99))


def run(args: argparse.Namespace) -> int:
    from tensorkiln import build, zoo

    con = Console()
    t0 = time.perf_counter()
    with con.status(f"exporting zoo {args.model} to ONNX (cached after the first time) …"):
        path = zoo.get(args.model)
    con.print(f"model: {path} ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    with con.status("building the engine …"):
        eng = build(path)
    con.print(f"engine: {eng.num_steps} steps, built in {time.perf_counter() - t0:.1f} s")
    feeds = zoo.sample_inputs(args.model, batch=1)
    out = eng.run(feeds)
    name = eng.outputs[0].name
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
        con.print("[yellow]onnxruntime is not installed: skipping the output check "
                  "(pip install 'tensorkiln[dev]')[/]")
    ort_ms = None
    if ort is not None:
        so = ort.SessionOptions()
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ref = sess.run(None, feeds)[0]
        err = float(np.max(np.abs(out[name].astype(np.float64) - ref)))
        scale = float(np.max(np.abs(ref)))
        ok = err <= 1e-3 * scale
        con.print(f"output check vs onnxruntime: max abs error {err:.3g} (max |out| {scale:.3g}) → "
                  + ("[green]match[/]" if ok else "[red]MISMATCH[/]"))
        # alternate the two runtimes; each timed block follows its own warm-up
        ort_ms, ort_p99 = _median_ms(lambda: sess.run(None, feeds), args.runs)
    tk_ms, tk_p99 = _median_ms(lambda: eng.run(feeds), args.runs)
    con.print(f"latency batch 1: tensorkiln median {tk_ms:.1f} ms (p99 {tk_p99:.1f})")
    if ort_ms is not None:
        con.print(f"                 onnxruntime median {ort_ms:.1f} ms (p99 {ort_p99:.1f}) "
                  f"→ ratio {tk_ms / ort_ms:.2f}×")
    return 0
