"""tensorkiln run MODEL_OR_ENGINE [--inputs feeds.npz] [--save-outputs out.npz]"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from tensorkiln.cli.common import load_npz, open_engine, parse_shapes, random_inputs


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx model or a tensorkiln engine file")
    p.add_argument("--inputs", help=".npz with one array per input (default: random inputs)")
    p.add_argument("--shapes", action="append", metavar="NAME:1x3x224x224",
                   help="shape for an input with symbolic dims (repeatable or comma separated)")
    p.add_argument("--save-outputs", help="write the outputs to this .npz")
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs")
    p.add_argument("--iterations", type=int, default=1, help="run this many times and report latency")
    p.add_argument("--profile", action="store_true", help="per-step times (median of --profile-runs runs)")
    p.add_argument("--profile-runs", type=int, default=10)
    p.add_argument("--top", type=int, default=0, help="with --profile: show only the N slowest steps")


def run(args: argparse.Namespace) -> int:
    con = Console()
    eng = open_engine(args.model)
    feeds = load_npz(args.inputs) if args.inputs else random_inputs(eng, parse_shapes(args.shapes), args.seed)
    times = []
    outs: dict[str, np.ndarray] = {}
    for _ in range(max(1, args.iterations)):
        t0 = time.perf_counter()
        outs = eng.run(feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    table = Table(title="outputs")
    for col in ("name", "dtype", "shape", "min", "max", "mean"):
        table.add_column(col)
    for name, arr in outs.items():
        numeric = arr.size and arr.dtype.kind in "fiub"
        a = arr.astype(np.float64) if numeric else None
        table.add_row(name, str(arr.dtype), str(list(arr.shape)),
                      *(f"{f(a):.5g}" if a is not None else "-" for f in (np.min, np.max, np.mean)))
    con.print(table)
    med = float(np.median(times))
    con.print(f"latency: median {med:.2f} ms over {len(times)} run(s)")
    if args.profile:
        _print_profile(con, eng.profile(feeds, runs=args.profile_runs), args.top)
    if args.save_outputs:
        np.savez(args.save_outputs, **outs)
        con.print(f"outputs written to {args.save_outputs}")
    return 0


def _print_profile(con: Console, rows: list[dict[str, object]], top: int) -> None:
    total = sum(float(r["ms"]) for r in rows)  # type: ignore[arg-type]
    shown = sorted(rows, key=lambda r: -float(r["ms"]))[:top] if top else rows  # type: ignore[arg-type]
    t = Table(title=f"per-step profile (total {total:.2f} ms)")
    for col in ("#", "op", "ms", "share", "ONNX nodes"):
        t.add_column(col, justify="right" if col in ("ms", "share") else "left")
    for r in shown:
        t.add_row(str(r["index"]), str(r["op"]), f"{float(r['ms']):.3f}",  # type: ignore[arg-type]
                  f"{100 * float(r['share']):.1f} %", ", ".join(r["origin"]))  # type: ignore[arg-type]
    con.print(t)
