"""tensorkiln inspect MODEL_OR_ENGINE"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from tensorkiln.cli.common import open_engine, parse_shapes, random_inputs
from tensorkiln.engine import Engine


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx model or a tensorkiln engine file")
    p.add_argument("--steps", type=int, default=60, help="show at most this many steps (0 = all)")
    p.add_argument("--graph", action="store_true", help="print the optimized graph as text")
    p.add_argument("--why-not-fused", action="store_true",
                   help="for each candidate pattern that did not fire, the reason its check returned")
    p.add_argument("--memory", action="store_true",
                   help="plan activation memory (runs once on random inputs shaped by --shapes)")
    p.add_argument("--shapes", action="append", metavar="NAME:1x3x224x224", help="input shapes for --memory")


def _shape(shape: tuple[object, ...] | None) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def run(args: argparse.Namespace) -> int:
    con = Console()
    eng = open_engine(args.model)
    io = Table(title="inputs and outputs")
    for col in ("kind", "name", "dtype", "shape"):
        io.add_column(col)
    for kind, specs in (("input", eng.inputs), ("output", eng.outputs)):
        for s in specs:
            io.add_row(kind, s.name, s.dtype or "?", _shape(s.shape))
    con.print(io)
    hist = Table(title="op histogram (after optimization)")
    hist.add_column("op")
    hist.add_column("count", justify="right")
    for op, n in eng.op_histogram().items():
        hist.add_row(op, str(n))
    con.print(hist)
    con.print(f"steps: {eng.num_steps}   weights: {eng.weight_bytes() / 1e6:.2f} MB   "
              f"target: {eng.target.get('cpu', '?')} ({eng.target.get('device', '?')})")
    _print_steps(con, eng, args.steps)
    _print_fusions(con, eng, args.why_not_fused)
    if args.memory:
        feeds = random_inputs(eng, parse_shapes(args.shapes))
        plan = eng.memory_plan(feeds)
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
        con.print(f"activation memory for {shapes}: planned peak {plan.peak_bytes / 1e6:.1f} MB "
                  f"(arena {plan.arena_bytes / 1e6:.1f} MB) vs naive sum {plan.naive_bytes / 1e6:.1f} MB "
                  f"= {100 * plan.peak_bytes / max(plan.naive_bytes, 1):.1f} %; "
                  f"weights {eng.weight_bytes() / 1e6:.1f} MB")
    if args.graph:
        from tensorkiln.ir import format_graph

        con.print(format_graph(eng.graph), markup=False, highlight=False)
    return 0


def _print_steps(con: Console, eng: Engine, limit: int) -> None:
    steps = eng.steps()
    limit = len(steps) if limit == 0 else limit
    st = Table(title=f"steps (first {min(limit, len(steps))} of {len(steps)})")
    for col in ("#", "op", "layout", "outputs", "ONNX nodes"):
        st.add_column(col)
    for s in steps[:limit]:
        st.add_row(str(s["index"]), s["op"], s["layout"], ", ".join(s["outputs"]), ", ".join(s["origin"]))
    con.print(st)


def _print_fusions(con: Console, eng: Engine, why_not: bool) -> None:
    if not eng.build_reports:
        return
    t = Table(title="passes")
    for col in ("pass", "fired", "not fired"):
        t.add_column(col)
    for name, rep in eng.build_reports.items():
        t.add_row(name, str(rep.get("fired", 0)), str(len(rep.get("why_not", []))))
    con.print(t)
    if why_not:
        w = Table(title="why not fused")
        for col in ("pass", "node", "reason"):
            w.add_column(col)
        for name, rep in eng.build_reports.items():
            for node, reason in rep.get("why_not", []):
                w.add_row(name, node, reason)
        con.print(w)
