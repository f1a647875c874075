"""tensorkiln build MODEL -o ENGINE"""

from __future__ import annotations

import argparse
import time

from rich.console import Console

from tensorkiln.engine import build


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="path to an .onnx model")
    p.add_argument("-o", "--output", required=True, help="engine file to write")
    p.add_argument("--no-optimize", action="store_true", help="skip all graph passes (to bisect)")
    p.add_argument("--no-fusion", action="store_true", help="skip layer fusions")
    p.add_argument("--no-layout", action="store_true", help="keep NCHW everywhere (no channels-last regions)")
    p.add_argument("--no-planner", action="store_true", help="keep every intermediate alive for the whole run")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")


def options_from_args(args: argparse.Namespace) -> dict[str, object]:
    return {"optimize": not args.no_optimize, "fusion": not args.no_fusion, "layout": not args.no_layout,
            "planner": not args.no_planner, "threads": args.threads}


def run(args: argparse.Namespace) -> int:
    con = Console()
    t0 = time.perf_counter()
    with con.status(f"building {args.model} …"):
        eng = build(args.model, **options_from_args(args))
        eng.save(args.output)
    dt = time.perf_counter() - t0
    con.print(f"built [bold]{args.output}[/]: {eng.num_steps} steps, "
              f"{eng.weight_bytes() / 1e6:.1f} MB weights, in {dt:.1f} s")
    return 0
