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
    if args.save_outputs:
        np.savez(args.save_outputs, **outs)
        con.print(f"outputs written to {args.save_outputs}")
    return 0
