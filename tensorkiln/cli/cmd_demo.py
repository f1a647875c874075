"""tensorkiln demo: zoo ResNet-50 → engine → check against onnxruntime → latency."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="resnet50", help="zoo network to use (default resnet50)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per runtime")


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
    if ort is not None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ref = sess.run(None, feeds)[0]
        err = float(np.max(np.abs(out[name].astype(np.float64) - ref)))
        scale = float(np.max(np.abs(ref)))
        ok = err <= 1e-3 * scale
        con.print(f"output check vs onnxruntime: max abs error {err:.3g} (max |out| {scale:.3g}) → "
                  + ("[green]match[/]" if ok else "[red]MISMATCH[/]"))
    from tensorkiln.bench import Runner, measure_side_by_side

    runners = [Runner("tensorkiln", lambda: eng.run(feeds))]
    if ort is not None:
        runners.append(Runner("onnxruntime", lambda: sess.run(None, feeds)))
    # interleaved rounds, order flipped each round, every timed call after an untimed one
    res = measure_side_by_side(runners, rounds=args.runs)
    con.print(f"latency batch 1: tensorkiln median {res.median('tensorkiln'):.1f} ms "
              f"(p99 {res.p99('tensorkiln'):.1f})")
    if ort is not None:
        con.print(f"                 onnxruntime median {res.median('onnxruntime'):.1f} ms "
                  f"(p99 {res.p99('onnxruntime'):.1f}) → ratio {res.ratio('tensorkiln', 'onnxruntime'):.2f}× "
                  "(median of per-round ratios)")
    return 0
