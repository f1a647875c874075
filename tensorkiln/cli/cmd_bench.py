"""tensorkiln bench MODEL_OR_ENGINE [--batch 1,2,4] [--latency-budget 7ms] [--compare ort,openvino,torch]
[--json out.json] [--report out.html];  tensorkiln bench --suite seed"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

from rich.console import Console
from rich.table import Table

from tensorkiln.bench.inputs import describe, resolve_model
from tensorkiln.bench.measure import ConfigResult
from tensorkiln.bench.peers import LABELS, parse_peers
from tensorkiln.bench.session import Bench, BenchSettings, BudgetPoint
from tensorkiln.bench.sidebyside import PeerBatch
from tensorkiln.bench.stats import load_average
from tensorkiln.cli.common import load_npz, parse_shapes
from tensorkiln.errors import OptionError


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="an .onnx model, an engine file, or a zoo model name (resnet50)")
    p.add_argument("--batch", help="batch sizes to sweep, e.g. 1,2,4,8 (the model's first symbolic dim)")
    p.add_argument("--streams", default="1", help="CPU streams, e.g. 1 or 1,2 or auto")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for the engine and peers")
    p.add_argument("--duration", type=float, default=None,
                   help="timed seconds per configuration, at least (default 3; 2 with --suite)")
    p.add_argument("--iterations", type=int, default=None,
                   help="timed runs per configuration, at least (default 10; 3 with --suite)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per configuration (default 0.5)")
    p.add_argument("--inputs", help=".npz with real inputs (resized along the batch axis); default random")
    p.add_argument("--shapes", action="append", metavar="NAME:1x3x224x224", help="shapes for symbolic dims")
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs")
    p.add_argument("--latency-budget", metavar="7ms",
                   help="find the highest throughput whose p99 latency stays within this budget")
    p.add_argument("--compare", metavar="ort,openvino,torch", help="time these peers side by side")
    p.add_argument("--compare-seconds", type=float, default=10.0, help="side-by-side seconds per batch (about)")
    p.add_argument("--no-overhead", action="store_true", help="skip the host-overhead vs compute measurement")
    p.add_argument("--profile", action="store_true", help="print the per-layer profile (always in --report)")
    p.add_argument("--json", metavar="FILE", help="write every number, the machine fingerprint and versions")
    p.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report with plots")
    p.add_argument("--suite", metavar="seed", help="run a benchmark suite of zoo models instead of one model")
    p.add_argument("--suite-max-batch", type=int, default=None, help="with --suite: skip larger batches")
    p.add_argument("--suite-models", help="with --suite: only these models (comma separated)")


def wide_console() -> Console:
    """A console 140 columns wide when writing to a pipe or file (tables stay readable in logs)."""
    con = Console()
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con = Console(width=140)
    return con


def parse_ints(text: str, flag: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise OptionError(f"{flag} expects integers separated by commas, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise OptionError(f"{flag} expects positive integers, got {text!r}")
    return vals


def parse_budget(text: str) -> float:
    """'7ms', '7', '0.007s', '7000us' → milliseconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(ms|s|us|µs)?\s*", text.lower())
    if not m:
        raise OptionError(f"--latency-budget expects a time like 7ms, 0.5s or 700us, got {text!r}")
    v = float(m.group(1)) * {"ms": 1.0, None: 1.0, "s": 1e3, "us": 1e-3, "µs": 1e-3}[m.group(2)]
    if v <= 0:
        raise OptionError("--latency-budget must be positive")
    return v


def _streams(text: str) -> list[int]:
    if text.strip() == "auto":
        from tensorkiln.runtime.streams import cpu_count

        return [max(1, cpu_count())]
    return parse_ints(text, "--streams")


def run(args: argparse.Namespace) -> int:
    con = wide_console()
    suite = bool(args.suite)
    args.duration = (2.0 if suite else 3.0) if args.duration is None else args.duration
    args.iterations = (3 if suite else 10) if args.iterations is None else args.iterations
    args.warmup = (0.3 if suite else 0.5) if args.warmup is None else args.warmup
    if args.duration < 0 or args.warmup < 0:
        raise OptionError("--duration and --warmup must be >= 0")
    if suite:
        return _run_suite(con, args)
    if not args.model:
        raise OptionError("bench needs a MODEL (an .onnx file, an engine file or a zoo model name), or --suite seed")
    settings = BenchSettings(
        batches=parse_ints(args.batch, "--batch") if args.batch else None, streams=_streams(args.streams),
        duration_s=args.duration, iterations=max(1, args.iterations), warmup_s=args.warmup, threads=args.threads,
        seed=args.seed, shapes=parse_shapes(args.shapes), real_inputs=load_npz(args.inputs) if args.inputs else None,
        overhead_pairs=0 if args.no_overhead else 5)
    peers = parse_peers(args.compare) if args.compare else []
    budget = parse_budget(args.latency_budget) if args.latency_budget else None
    ref = resolve_model(args.model)
    with con.status(f"building {describe(ref)} …"):
        bench = Bench(ref, settings)
    con.print(f"[bold]{describe(ref)}[/]: {bench.engine.num_steps} steps, built in {bench.build_s:.1f} s; "
              f"{bench.threads} thread(s); load average {load_average()}")
    con.print(f"power: {bench.meter.unreadable}" if not bench.meter.readable else
              f"power: reading {bench.meter.source} (package energy: includes other processes)")
    table, lat_table = _config_tables()
    for b in bench.batches():
        for st in settings.streams:
            with con.status(f"batch {b}, {st} stream(s): {settings.duration_s:g} s …"):
                r = bench.measure(b, st)
            bench.results.append(r)
            _add_config_rows(table, lat_table, r)
    con.print(table)
    con.print(lat_table)
    con.print("host ms: time in Engine.run outside the kernels (run latency minus the sum of step times, "
              "one request at a time); compute ms: the sum of step times")
    for r in bench.results:
        if r.latency.noise_warning():
            con.print(f"[yellow]warning[/] batch {r.batch}, {r.streams} stream(s): {r.latency.noise_warning()}")
    if budget is not None:
        _run_budget(con, bench, budget, settings.batches, settings.streams if args.streams != "1" else None)
    if peers:
        _run_peers(con, bench, peers, args.compare_seconds)
    if args.profile or args.report:
        with con.status("per-layer profile …"):
            rows = bench.profile(runs=3)
        if args.profile:
            _print_profile(con, rows)
    data = bench.to_json()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
        con.print(f"JSON written to {args.json}")
    if args.report:
        from tensorkiln.bench.report import write_report

        with con.status("rendering report …"):
            write_report(data, args.report)
        con.print(f"report written to {args.report}")
    return 0


def _config_tables() -> tuple[Table, Table]:
    t = Table(title="throughput")
    for c in ("batch", "streams", "runs", "inf/s", "samples/s", "CV", "host ms", "compute ms", "samples/s/W",
              "J/sample"):
        t.add_column(c, justify="right")
    lat = Table(title="latency per request (ms)")
    for c in ("batch", "streams", "min", "mean", "median", "p90", "p95", "p99", "max"):
        lat.add_column(c, justify="right")
    return t, lat


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _add_config_rows(t: Table, tl: Table, r: ConfigResult) -> None:
    lat = r.latency
    ov = r.overhead
    cv = f"{100 * lat.cv:.1f}%"
    t.add_row(str(r.batch), str(r.streams), str(r.inferences), _f(r.inferences_per_s), _f(r.samples_per_s),
              f"[yellow]{cv}[/]" if lat.noise_warning() else cv,
              _f(ov.host_ms if ov else None, ".3f"), _f(ov.compute_ms if ov else None),
              _f(r.power.get("samples_per_s_per_w"), ".3f"), _f(r.power.get("joules_per_sample"), ".3f"))
    tl.add_row(str(r.batch), str(r.streams), *(_f(getattr(lat, k)) for k in ("min", "mean", "median", "p90", "p95",
                                                                             "p99", "max")))


def _run_budget(con: Console, bench: Bench, budget: float, batches: list[int] | None,
                streams: list[int] | None) -> None:
    t = Table(title=f"latency budget {budget:g} ms: search curve")
    for c in ("streams", "batch", "median ms", "p99 ms", "samples/s", "within"):
        t.add_column(c, justify="right")

    def point(p: BudgetPoint) -> None:
        con.print(f"  streams {p.streams} batch {p.batch}: p99 {p.p99_ms:.2f} ms, {p.samples_per_s:.1f} samples/s"
                  f" {'✓' if p.within else '✗ over budget'}")
        t.add_row(str(p.streams), str(p.batch), _f(p.median_ms), _f(p.p99_ms), _f(p.samples_per_s),
                  "yes" if p.within else "[red]no[/]")

    con.print(f"searching batch × streams for p99 <= {budget:g} ms …")
    res = bench.budget(budget, batches, streams, on_point=point)
    con.print(t)
    if res.best:
        b = res.best
        con.print(f"[bold green]best within {budget:g} ms:[/] batch {b.batch}, {b.streams} stream(s): "
                  f"{b.samples_per_s:.1f} samples/s at p99 {b.p99_ms:.2f} ms (load average {res.load})")
    else:
        low = min(res.curve, key=lambda p: p.p99_ms)
        con.print(f"[bold red]no configuration keeps p99 within {budget:g} ms[/] on this machine: the lowest p99 was "
                  f"{low.p99_ms:.2f} ms (batch {low.batch}, {low.streams} stream(s)) (load average {res.load})")


def _run_peers(con: Console, bench: Bench, peers: list[str], seconds: float) -> None:
    def skip(name: str, why: str) -> None:
        con.print(f"[yellow]{LABELS.get(name, name)} skipped:[/] {why}")

    def batch_done(pb: PeerBatch) -> None:
        t = Table(title=f"side by side, batch {pb.batch} ({pb.rounds} interleaved rounds, load {pb.load})")
        for c in ("runtime", "median ms", "p99 ms", "samples/s", "peer / tensorkiln time", "max rel diff"):
            t.add_column(c, justify="right")
        for r in pb.rows:
            t.add_row(LABELS.get(r.runtime, r.runtime), _f(r.median_ms), _f(r.p99_ms), _f(r.samples_per_s),
                      "1 (baseline)" if r.runtime == "tensorkiln" else f"{r.speedup:.3f}",
                      _f(r.max_rel_diff, ".1e"))
        con.print(t)

    with con.status("timing peers side by side …"):
        bench.peers(peers, seconds, on_batch=batch_done, on_skip=skip)
    con.print("peer / tensorkiln time > 1 means tensorkiln is faster (median of per-round ratios)")


def _print_profile(con: Console, rows: list[dict[str, Any]], top: int = 25) -> None:
    total = sum(float(r["ms"]) for r in rows)
    t = Table(title=f"per-layer profile ({top} slowest; total {total:.2f} ms)")
    for c in ("#", "op", "ms", "share", "ONNX nodes"):
        t.add_column(c, justify="right" if c in ("ms", "share") else "left")
    for r in sorted(rows, key=lambda r: -float(r["ms"]))[:top]:
        t.add_row(str(r["index"]), str(r["op"]), f"{float(r['ms']):.3f}", f"{100 * float(r['share']):.1f}%",
                  ", ".join(r["origin"])[:80])
    con.print(t)


def _run_suite(con: Console, args: argparse.Namespace) -> int:
    from tensorkiln.bench.suite import run_suite

    models = [m.strip() for m in args.suite_models.split(",")] if args.suite_models else None
    rows = []
    t = Table(title=f"suite {args.suite}")
    for c in ("model", "batch", "samples/s", "unit", "power (W)", "samples/s/W", "latency ms (median)", "p99 ms",
              "CV", "load"):
        t.add_column(c, justify="right")
    note = ""

    def on_row(row: object) -> None:
        from tensorkiln.bench.suite import SuiteRow

        assert isinstance(row, SuiteRow)
        nonlocal note
        r = row.result
        pw = r.power
        note = note or (pw.get("note") or "")
        rows.append(row)
        con.print(f"  {row.model} batch {r.batch}: {r.samples_per_s:.2f} {row.unit}/s, "
                  f"median {r.latency.median:.1f} ms")
        t.add_row(row.model, str(r.batch), _f(r.samples_per_s), f"{row.unit}/s",
                  _f(pw.get("watts"), ".1f") if pw.get("watts") is not None else "not readable",
                  _f(pw.get("samples_per_s_per_w"), ".3f"), _f(r.latency.median), _f(r.latency.p99),
                  f"{100 * r.latency.cv:.0f}%" + (" noisy" if r.latency.cv > 0.1 else ""), str(r.load))

    def on_model(name: str) -> None:
        con.print(f"[bold]{name}[/] …")

    run_suite(args.suite, models=models, max_batch=args.suite_max_batch, duration_s=args.duration,
              iterations=max(1, args.iterations), warmup_s=args.warmup, threads=args.threads,
              on_row=on_row, on_model=on_model)
    con.print(t)
    if note:
        con.print(f"power: {note}")
    if args.json:
        from tensorkiln.bench.session import versions
        from tensorkiln.engine.target import fingerprint

        with open(args.json, "w") as f:
            json.dump({"tool": "tensorkiln bench --suite", "suite": args.suite, "fingerprint": fingerprint(),
                       "versions": versions(), "rows": [r.to_json() for r in rows]}, f, indent=1)
        con.print(f"JSON written to {args.json}")
    return 0
