"""tensorkiln build MODEL -o ENGINE"""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console

from tensorkiln.cli.common import parse_shapes
from tensorkiln.engine import build
from tensorkiln.errors import OptionError


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="path to an .onnx model")
    p.add_argument("-o", "--output", required=True, help="engine file to write")
    p.add_argument("--no-optimize", action="store_true", help="skip all graph passes (to bisect)")
    p.add_argument("--no-fusion", action="store_true", help="skip layer fusions")
    p.add_argument("--no-layout", action="store_true", help="keep NCHW everywhere (no channels-last regions)")
    p.add_argument("--no-planner", action="store_true", help="keep every intermediate alive for the whole run")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--streams", default="1", help="CPU streams for throughput (N or 'auto')")
    p.add_argument("--opt-level", type=int, default=2, help="0 = heuristic tactics only … 5 = widest timing")
    p.add_argument("--tune-budget", type=float, default=60.0, help="seconds of tactic timing at most")
    p.add_argument("--timing-cache", default=None, help="timing cache file (default: per machine in ~/.cache)")
    p.add_argument("--tactics", default=None, help="replay pinned tactic choices (JSON or a --report file)")
    p.add_argument("--report", default=None, help="write a build report (steps, tactics, timings) as JSON")
    for kind in ("min", "opt", "max"):
        p.add_argument(f"--{kind}-shapes", action="append", metavar="NAME:1x3x224x224",
                       help=f"{kind} shape of an optimization profile (give all three)")


def options_from_args(args: argparse.Namespace) -> dict[str, object]:
    opts: dict[str, object] = {"optimize": not args.no_optimize, "fusion": not args.no_fusion,
                               "layout": not args.no_layout, "planner": not args.no_planner,
                               "threads": args.threads, "opt_level": args.opt_level,
                               "tune_budget_s": args.tune_budget, "timing_cache": args.timing_cache,
                               "tactics_file": args.tactics, "progress": True}
    opts["streams"] = "auto" if args.streams == "auto" else _int(args.streams, "--streams")
    given = {k: parse_shapes(getattr(args, f"{k}_shapes")) for k in ("min", "opt", "max")}
    if any(given.values()):
        names = set(given["min"]) | set(given["opt"]) | set(given["max"])
        missing = [f"--{k}-shapes {n}:..." for n in sorted(names) for k in given if n not in given[k]]
        if missing:
            raise OptionError("an optimization profile needs min, opt and max for every input: missing "
                              + ", ".join(missing))
        opts["shapes"] = {n: {k: given[k][n] for k in given} for n in sorted(names)}
    return opts


def _int(v: str, flag: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise OptionError(f"{flag} expects an integer or 'auto', got {v!r}") from None


def run(args: argparse.Namespace) -> int:
    con = Console()
    t0 = time.perf_counter()
    with con.status(f"building {args.model} …"):
        eng = build(args.model, **options_from_args(args))
        eng.save(args.output)
    dt = time.perf_counter() - t0
    con.print(f"built [bold]{args.output}[/]: {eng.num_steps} steps, "
              f"{eng.weight_bytes() / 1e6:.1f} MB weights, in {dt:.1f} s")
    if eng.tuning:
        st = eng.tuning_stats
        con.print(f"tuned {len(eng.tuning)} steps (timing cache {st.get('cache_path')}: "
                  f"{st.get('cache_hits', 0)} hits, {st.get('cache_misses', 0)} misses)")
    if args.report:
        doc = {"model": args.model, "engine": args.output, "build_seconds": dt, "target": eng.target,
               "steps": eng.steps(), "tuning": eng.tuning, "tuning_stats": eng.tuning_stats,
               "passes": eng.build_reports}
        with open(args.report, "w") as f:
            json.dump(doc, f, indent=1)
        con.print(f"build report written to {args.report}")
    return 0
