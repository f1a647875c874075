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
    p.add_argument("--tune-budget", type=float, default=60.0,
                   help="seconds of tactic timing to aim for (fewer timing rounds, never under 3)")
    p.add_argument("--timing-cache", default=None, help="timing cache file (default: per machine in ~/.cache)")
    p.add_argument("--tactics", default=None, help="replay pinned tactic choices (JSON or a --report file)")
    p.add_argument("--report", default=None, help="write a build report (steps, tactics, timings) as JSON")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "int8", "best"],
                   help="lowest precision a layer may run in (int8 needs --calib or --calib-cache)")
    p.add_argument("--strict", action="store_true", help="force --precision on every layer that has a kernel")
    p.add_argument("--calib", default=None, metavar="DIR_OR_NPZ",
                   help="int8 calibration data: a .npz (one array per input) or a directory of .npz/.npy files")
    p.add_argument("--calib-cache", default=None, metavar="FILE",
                   help="calibration cache (JSON ranges): read when it exists, written after calibrating")
    p.add_argument("--calibrator", default="auto",
                   help="auto | minmax | entropy | percentile-99.9|99.99|99.999 | mse")
    p.add_argument("--accuracy-budget", default="0.01",
                   help="allowed loss of the accuracy metric vs fp32 on held-out calibration data ('none' = off)")
    p.add_argument("--accuracy-metric", default="auto", help="auto | top1 | cosine")
    p.add_argument("--layer-precision", action="append", default=[], metavar="NAME_OR_OP=PREC",
                   help="per-layer override by node name or op type, e.g. Conv_0=fp32 or Gemm=fp32")
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
    opts.update(_precision_options(args))
    given = {k: parse_shapes(getattr(args, f"{k}_shapes")) for k in ("min", "opt", "max")}
    if any(given.values()):
        names = set(given["min"]) | set(given["opt"]) | set(given["max"])
        missing = [f"--{k}-shapes {n}:..." for n in sorted(names) for k in given if n not in given[k]]
        if missing:
            raise OptionError("an optimization profile needs min, opt and max for every input: missing "
                              + ", ".join(missing))
        opts["shapes"] = {n: {k: given[k][n] for k in given} for n in sorted(names)}
    return opts


def _precision_options(args: argparse.Namespace) -> dict[str, object]:
    opts: dict[str, object] = {}
    if args.precision != "fp32":
        opts["precision"] = args.precision
    if args.strict:
        opts["strict"] = True
    if args.calib_cache:
        opts["calibration_cache"] = args.calib_cache
    if args.calibrator != "auto":
        opts["calibrator"] = args.calibrator
    if args.accuracy_metric != "auto":
        opts["accuracy_metric"] = args.accuracy_metric
    if args.accuracy_budget != "0.01":
        try:
            opts["accuracy_budget"] = None if args.accuracy_budget.lower() == "none" else float(args.accuracy_budget)
        except ValueError:
            raise OptionError(f"--accuracy-budget expects a number or 'none', got {args.accuracy_budget!r}") from None
    overrides: dict[str, str] = {}
    for item in args.layer_precision:
        name, sep, prec = item.rpartition("=")
        if not sep or not name:
            raise OptionError(f"--layer-precision expects NAME_OR_OP=PRECISION, got {item!r}")
        overrides[name] = prec
    if overrides:
        opts["layer_precision"] = overrides
    return opts


def _calibration_data(args: argparse.Namespace) -> object:
    if not args.calib:
        return None
    import onnx

    from tensorkiln.quant.data import load_calibration

    g = onnx.load(args.model, load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    return load_calibration(args.calib, [i.name for i in g.input if i.name not in inits])


def _int(v: str, flag: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise OptionError(f"{flag} expects an integer or 'auto', got {v!r}") from None


def run(args: argparse.Namespace) -> int:
    con = Console()
    t0 = time.perf_counter()
    with con.status(f"building {args.model} …"):
        eng = build(args.model, calibration_data=_calibration_data(args), **options_from_args(args))
        eng.save(args.output)
    dt = time.perf_counter() - t0
    con.print(f"built [bold]{args.output}[/]: {eng.num_steps} steps, "
              f"{eng.weight_bytes() / 1e6:.1f} MB weights, in {dt:.1f} s")
    prec = eng.build_reports.get("precision")
    if prec:
        layers = prec.get("layers", {})
        counts = {p: sum(1 for v in layers.values() if v == p) for p in sorted(set(layers.values()))}
        score = prec.get("measured_score")
        con.print(f"precision {prec['precision']}: layers {counts or 'none converted'}"
                  + (f", {prec.get('metric')} vs fp32 on {prec.get('held_out')} held-out samples: {score:.4f}"
                     if score is not None else ""))
        for note in prec.get("notes", []):
            con.print(f"  {note}")
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
