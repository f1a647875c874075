"""tensorkiln inspect MODEL_OR_ENGINE"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from tensorkiln.cli.common import open_engine


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx model or a tensorkiln engine file")
    p.add_argument("--steps", type=int, default=50, help="show at most this many steps (0 = all)")
    p.add_argument("--graph", action="store_true", help="print the optimized graph as text")


def run(args: argparse.Namespace) -> int:
    con = Console()
    eng = open_engine(args.model)
    io = Table(title="inputs and outputs")
    for col in ("kind", "name", "dtype", "shape"):
        io.add_column(col)
    for kind, specs in (("input", eng.inputs), ("output", eng.outputs)):
        for s in specs:
            dims = [] if s.shape is None else ["?" if d is None else str(d) for d in s.shape]
            shape = "?" if s.shape is None else "[" + ", ".join(dims) + "]"
            io.add_row(kind, s.name, s.dtype or "?", shape)
    con.print(io)
    hist = Table(title="op histogram")
    hist.add_column("op")
    hist.add_column("count", justify="right")
    for op, n in eng.op_histogram().items():
        hist.add_row(op, str(n))
    con.print(hist)
    con.print(f"steps: {eng.num_steps}   weights: {eng.weight_bytes() / 1e6:.2f} MB   "
              f"target: {eng.target.get('cpu', '?')} ({eng.target.get('device', '?')})")
    steps = eng.steps()
    limit = len(steps) if args.steps == 0 else args.steps
    st = Table(title=f"steps (first {min(limit, len(steps))} of {len(steps)})")
    for col in ("#", "op", "outputs", "ONNX nodes"):
        st.add_column(col)
    for s in steps[:limit]:
        st.add_row(str(s["index"]), s["op"], ", ".join(s["outputs"]), ", ".join(s["origin"]))
    con.print(st)
    if args.graph:
        from tensorkiln.ir import format_graph

        con.print(format_graph(eng.graph), markup=False, highlight=False)
    return 0
