"""tensorkiln compare MODEL [--precision int8] [--reference fp32|ort|onnx-reference] [--find-divergence]"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import onnx
from rich.console import Console
from rich.table import Table

from tensorkiln.bench.accuracy import REFERENCES, Reference, Tolerance, build_under_test, compare_outputs
from tensorkiln.bench.divergence import Tap, find_divergence
from tensorkiln.bench.inputs import describe, make_feeds, onnx_input_specs, resolve_model
from tensorkiln.bench.stats import load_average
from tensorkiln.cli.cmd_bench import wide_console
from tensorkiln.cli.common import load_npz, parse_shapes
from tensorkiln.errors import ModelError, OptionError


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the .onnx model to build and test (or a zoo model name)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8", "best"], default=None,
                   help="build the engine under test at this precision (needs a build that supports it)")
    p.add_argument("--calibration-batches", type=int, default=8,
                   help="with --precision int8: calibrate on this many generated batches (other seeds than the "
                        "compared inputs)")
    p.add_argument("--calibration-inputs", help="with --precision int8: calibrate on this .npz instead")
    p.add_argument("--reference", choices=REFERENCES, default="ort",
                   help="fp32: the model built with optimize=False; ort: onnxruntime; onnx-reference: "
                        "onnx.reference.ReferenceEvaluator (default ort)")
    p.add_argument("--reference-model", help="run the reference on this .onnx instead of MODEL "
                                             "(e.g. the model before a change)")
    p.add_argument("--no-optimize", action="store_true", help="build the engine under test without graph passes")
    p.add_argument("--strict", action="store_true",
                   help="force the precision on every layer it can run (no fall-back to fp32 for speed or accuracy)")
    p.add_argument("--disable-pass", action="append", metavar="PASS", default=[],
                   help="build the engine under test without this pass (repeatable), to bisect")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--inputs", help=".npz with the inputs (default: random / zoo sample inputs)")
    p.add_argument("--shapes", action="append", metavar="NAME:1x3x224x224", help="shapes for symbolic dims")
    p.add_argument("--batch", type=int, default=1, help="batch size of generated inputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rtol", type=float, default=None, help="relative tolerance (default 1e-3; 0.1 below fp32)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default 1e-3; 0.1 below fp32)")
    p.add_argument("--tol", action="append", metavar="OUTPUT:RTOL:ATOL", help="tolerance for one output")
    p.add_argument("--find-divergence", action="store_true",
                   help="tap every fused step and name the first one whose error jumps")
    p.add_argument("--threshold", type=float, default=1e-3,
                   help="with --find-divergence: error (RMS error / reference std) a step must exceed "
                        "(default 1e-3; int8 kernels vs a float QDQ reference need about 5e-2)")
    p.add_argument("--jump", type=float, default=5.0,
                   help="with --find-divergence: ... and exceed its inputs' error this many times (default 5)")
    p.add_argument("--stop-at-first", action="store_true", help="stop tapping at the first divergent step")
    p.add_argument("--chunk-mb", type=int, default=256, help="reference tensors held at once (MB)")
    p.add_argument("--all-taps", action="store_true", help="print every tap, not only those over the threshold")
    p.add_argument("--json", metavar="FILE", help="write the comparison as JSON")


def _tolerances(args: argparse.Namespace) -> tuple[Tolerance, dict[str, Tolerance]]:
    low = args.precision in ("fp16", "bf16", "int8", "best")
    # fp32 defaults: a 50-layer network summed in another order (oneDNN vs onnxruntime) differs by
    # ~1e-4 absolute on logits of magnitude ~10 (zoo ResNet-50), so 1e-5 would always fail
    default = Tolerance(args.rtol if args.rtol is not None else (0.1 if low else 1e-3),
                        args.atol if args.atol is not None else (0.1 if low else 1e-3))
    per: dict[str, Tolerance] = {}
    for item in args.tol or []:
        name, sep, rest = item.partition(":")
        r, sep2, a = rest.partition(":")
        try:
            if not (sep and sep2 and name):
                raise ValueError
            per[name] = Tolerance(float(r), float(a))
        except ValueError:
            raise OptionError(f"--tol expects OUTPUT:RTOL:ATOL, e.g. logits:1e-3:1e-4; got {item!r}") from None
    return default, per


def _g(x: float | None, fmt: str = ".3g") -> str:
    if x is None:
        return "-"
    return "inf" if math.isinf(x) else format(x, fmt)


def run(args: argparse.Namespace) -> int:
    con = wide_console()
    default_tol, per_tol = _tolerances(args)
    ref_model = resolve_model(args.model)
    if ref_model.is_engine:
        raise OptionError("compare builds the engine under test itself: give the .onnx model, not an engine file")
    opts: dict[str, object] = {"optimize": not args.no_optimize}
    if args.disable_pass:
        opts["passes_disabled"] = list(args.disable_pass)
    if args.threads:
        opts["threads"] = args.threads
    if args.strict:
        opts["strict"] = True
    try:
        specs = onnx_input_specs(onnx.load(str(ref_model.path), load_external_data=False))
    except Exception as e:
        raise ModelError(f"{args.model!r}: cannot read the ONNX model: {str(e).splitlines()[0][:200]}") from None
    if args.reference_model:
        ref_model.zoo_name = None  # inputs follow the model's specs, not a zoo entry
    shapes = parse_shapes(args.shapes)
    feeds = (make_feeds(specs, None, args.batch, real=load_npz(args.inputs)) if args.inputs
             else make_feeds(specs, ref_model, args.batch, seed=args.seed, shapes=shapes))
    calib = None
    if args.precision in ("int8", "best"):
        calib = ([make_feeds(specs, None, args.batch, real=load_npz(args.calibration_inputs))]
                 if args.calibration_inputs else
                 [make_feeds(specs, ref_model, args.batch, seed=args.seed + 1 + k, shapes=shapes)
                  for k in range(max(1, args.calibration_batches))])
    with con.status("building the engine under test …"):
        engine = build_under_test(str(ref_model.path), args.precision, calib, **opts)
    reference = Reference(args.reference, args.reference_model or str(ref_model.path), args.threads)
    con.print(f"engine under test: {describe(ref_model)} ({args.precision or 'fp32'}, {engine.num_steps} steps); "
              f"reference: {reference.label} on {args.reference_model or describe(ref_model)}; "
              f"inputs: {', '.join(f'{k} {list(np.shape(v))}' for k, v in feeds.items())}")
    got = engine.run(feeds)
    with con.status(f"running the reference ({reference.label}) …"):
        ref_out = reference.run(feeds)
    reports = compare_outputs(got, ref_out, default_tol, per_tol)
    _print_reports(con, reports)
    data: dict[str, object] = {"model": describe(ref_model), "precision": args.precision or "fp32",
                               "reference": args.reference, "reference_model": args.reference_model,
                               "outputs": [r.to_json() for r in reports], "load_average": load_average()}
    failed = [r.name for r in reports if not r.passed]
    if args.find_divergence:
        data["divergence"] = _divergence(con, args, engine, reference, feeds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1, default=float)
        con.print(f"JSON written to {args.json}")
    if failed:
        con.print(f"[bold red]FAILED[/]: {', '.join(failed)} outside tolerance")
        return 1
    con.print("[bold green]PASSED[/]: every output within tolerance")
    return 0


def _print_reports(con: Console, reports: list) -> None:  # type: ignore[type-arg]
    t = Table(title="outputs vs reference")
    for c in ("output", "shape", "max abs", "mean abs", "median abs", "q99 abs", "rel RMS", "cosine", "top-k",
              "tolerance", "result"):
        t.add_column(c, justify="left" if c in ("output", "tolerance", "top-k", "result") else "right")
    for r in reports:
        s = r.stats
        topk = ", ".join(f"{k} {100 * v:.1f}%" for k, v in r.topk.items())
        t.add_row(r.name, "x".join(map(str, r.shape)), _g(s.get("max_abs")), _g(s.get("mean_abs")),
                  _g(s.get("median_abs")), _g(s.get("q99_abs")), _g(s.get("rel_rms")), _g(s.get("cosine"), ".6f"),
                  topk or "-", str(r.tolerance), "[green]pass[/]" if r.passed else f"[red]FAIL[/] {r.problem}")
    con.print(t)
    for r in reports:
        if r.would_pass:
            ok = []
            for a, x in r.would_pass:  # stop at the first atol that passes on its own
                if math.isfinite(x):
                    ok.append(f"atol={a:g} alone" if x == 0 else f"atol={a:g} with rtol>={_g(x, '.2g')}")
                if x == 0:
                    break
            con.print(f"  {r.name}: would pass with " + ("; ".join(ok) if ok else "no tolerance in the grid"))


def _divergence(con: Console, args: argparse.Namespace, engine: object, reference: Reference,
                feeds: dict[str, np.ndarray]) -> dict[str, object]:
    t = Table(title=f"taps at fused-step boundaries vs {reference.label} "
                    f"({'all' if args.all_taps else 'over threshold'}; streamed)")
    for c in ("step", "op", "tensor", "ONNX nodes", "max abs", "error", "input err", "cosine", ""):
        t.add_column(c, justify="right" if c in ("step", "max abs", "error", "input err", "cosine") else "left")
    shown = [0]

    def on_tap(tap: Tap) -> None:
        if args.all_taps or tap.score > args.threshold or tap.problem:
            shown[0] += 1
            t.add_row(str(tap.step), tap.op.split("::")[-1], tap.value, ", ".join(tap.origin)[:60],
                      _g(tap.stats.get("max_abs")), _g(tap.score), _g(tap.input_error),
                      _g(tap.stats.get("cosine"), ".5f"), "[bold red]← jumps[/]" if tap.diverged else tap.problem)

    with con.status("tapping the engine step by step …"):
        d = find_divergence(engine, reference, feeds, threshold=args.threshold, jump=args.jump,  # type: ignore[arg-type]
                            chunk_bytes=args.chunk_mb << 20, on_tap=on_tap, stop_at_first=args.stop_at_first)
    if shown[0]:
        con.print(t)
    con.print(f"{len(d.taps)} taps compared ({d.untapped_steps} steps have no ONNX-named output), "
              f"{d.reference_runs} reference run(s)")
    if d.first:
        f = d.first
        off = f.stats.get("share_off_by_more_than_1")
        con.print(f"[bold red]first divergence:[/] step {f.step} {f.op} → {f.value!r}, ONNX node(s) "
                  f"[bold]{', '.join(f.origin)}[/]: error {_g(f.score)} (RMS error / reference std; its inputs "
                  f"{_g(f.input_error)}), max abs {_g(f.stats.get('max_abs'))}, mean abs "
                  f"{_g(f.stats.get('mean_abs'))}, cosine {_g(f.stats.get('cosine'), '.6f')}"
                  + (f", {100 * off:.1f} % of elements off by more than one unit" if off is not None else ""))
    elif d.first_over:
        f = d.first_over
        con.print(f"no single step jumps; error grows gradually, first over {args.threshold:g} at step {f.step} "
                  f"({', '.join(f.origin)}): error {_g(f.score)}")
    else:
        con.print(f"no divergence: every tap's error (RMS error / reference std) within {args.threshold:g}")
    return d.to_json()
