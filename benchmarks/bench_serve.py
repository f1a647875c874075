"""Zoo ResNet-50 behind `tensorkiln serve` on this machine (HTTP, binary tensors).

1. Throughput and p50/p99 latency at concurrency 1, 4, 8 with the dynamic batcher at delay 0, a fixed
   delay, and the adaptive mode (same delay, but no waiting when fewer than one more arrival is expected),
   and the adaptive mode with batches padded to the sizes that have exact weight packings.
2. Served latency at concurrency 1 vs in-process ``Engine.run`` (the serving overhead in ms), measured
   in interleaved rounds (median of per-round differences; the machine is shared and noisy).

    python benchmarks/bench_serve.py [--model resnet50] [--duration 10] [--delay-us 10000] [--json out.json]

The server runs in a subprocess; the load generator (stdlib HTTP, one thread per client) in this one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_common import add_model, load_average, model_source

import tensorkiln
from tensorkiln.serve.loadgen import Result, ServerProcess, Target, _Conn, closed_loop


def configs(delay_us: int, max_batch: int) -> dict[str, str]:
    base = f"max_batch_size: {max_batch}\n"
    return {
        "delay0": base + "dynamic_batching { }\n",
        f"delay{delay_us // 1000}ms": base + f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n",
        f"adaptive{delay_us // 1000}ms": base + f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n"
        'parameters { key: "tensorkiln_adaptive_batching" value { string_value: "true" } }\n',
        # the same, with batches padded to the sizes the engine keeps exact weight packings for
        f"adaptive{delay_us // 1000}ms_pad": base + f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n"
        'parameters { key: "tensorkiln_adaptive_batching" value { string_value: "true" } }\n'
        'parameters { key: "tensorkiln_pad_batch" value { string_value: "auto" } }\n',
    }


def overhead(server: ServerProcess, model: str, src: Path, feeds: dict, dts: dict, rounds: int, per: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from tensorkiln.runtime.streams import cpu_count

    engine = tensorkiln.build(str(src))
    ctx = engine.create_context(threads=cpu_count())  # what a served instance runs on
    worker = ThreadPoolExecutor(1)
    target = Target(server.http_url, model, feeds, dts)
    conn = _Conn(target.host, target.port, target.timeout)

    def timed(f: object) -> float:
        t0 = time.perf_counter()
        f()  # type: ignore[operator]
        return time.perf_counter() - t0

    local, ctxs, served, diffs, diffs_ctx = [], [], [], [], []
    for r in range(rounds):
        order = ["local", "context", "served"]
        order = order[r % 3:] + order[:r % 3]
        med = {}
        for which in order:
            times = []
            for k in range(per + 1):
                if which == "local":
                    dt = timed(lambda: engine.run(feeds))
                elif which == "context":
                    dt = worker.submit(timed, lambda: ctx.run(feeds)).result()
                else:
                    res = Result()
                    target.one(conn, res)
                    assert res.ok == 1, res.summary()
                    dt = res.latency_ok[0]
                if k:  # the first run of each group is untimed (threads wake up)
                    times.append(dt * 1e3)
            med[which] = statistics.median(times)
        local.append(med["local"])
        ctxs.append(med["context"])
        served.append(med["served"])
        diffs.append(med["served"] - med["local"])
        diffs_ctx.append(med["served"] - med["context"])
    worker.shutdown()
    engine.close()
    return {"in_process_ms": round(statistics.median(local), 2),
            "in_process_context_thread_ms": round(statistics.median(ctxs), 2),
            "served_c1_ms": round(statistics.median(served), 2),
            "overhead_ms": round(statistics.median(diffs), 2),
            "overhead_vs_context_ms": round(statistics.median(diffs_ctx), 2),
            "overhead_ms_per_round": [round(d, 2) for d in diffs],
            "overhead_vs_context_ms_per_round": [round(d, 2) for d in diffs_ctx]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--delay-us", type=int, default=10000)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds for the overhead")
    ap.add_argument("--rounds-per-point", type=int, default=2, help="turns each config takes per concurrency")
    ap.add_argument("--json")
    args = ap.parse_args()
    conc = [int(c) for c in args.concurrency.split(",")]
    out: dict = {"model": args.model, "load_average_start": load_average(), "points": []}
    with tempfile.TemporaryDirectory(prefix="tk-bench-serve-") as tmp:
        root = Path(tmp) / "repo"
        src, feeds, dts = model_source(args.model, Path(tmp))
        cfgs = configs(args.delay_us, args.max_batch)
        for name, cfg in cfgs.items():
            add_model(root, name, src, cfg)
        t0 = time.time()
        server = ServerProcess(str(root))
        out["server_start_s"] = round(time.time() - t0, 1)
        try:
            print(f"model {args.model}; server up in {out['server_start_s']} s; load average "
                  f"{out['load_average_start']}")
            print(f"{'config':18} {'conc':>4} {'infer/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'rows/exec':>9} "
                  f"{'load avg':>16}")
            names = list(cfgs)
            for c in conc:
                # the configs take turns (rounds, order rotated) so that the machine's load drifts
                # affect them alike
                acc = {n: [Result(), 0, 0] for n in names}
                for rnd in range(args.rounds_per_point):
                    for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                        s0 = server.stats(name)
                        r = closed_loop(Target(server.http_url, name, feeds, dts), c,
                                        args.duration / args.rounds_per_point, warmup_s=args.warmup)
                        s1 = server.stats(name)
                        a = acc[name]
                        a[0].merge(r)
                        a[1] += s1["execution_count"] - s0["execution_count"]
                        a[2] += s1["inference_count"] - s0["inference_count"]
                for name in names:
                    r, ex, inf = acc[name]
                    rows = inf / ex if ex else float("nan")
                    p = {"config": name, "concurrency": c, "throughput": round(r.throughput(), 2),
                         "p50_ms": round(r.pct(r.latency_ok, 50), 1), "p99_ms": round(r.pct(r.latency_ok, 99), 1),
                         "rows_per_execution": round(rows, 2), "non_200": sum(v for k, v in r.status.items()
                                                                              if k != 200) + r.errors,
                         "load_average": load_average()}
                    out["points"].append(p)
                    print(f"{name:18} {c:>4} {p['throughput']:>8} {p['p50_ms']:>8} {p['p99_ms']:>8} "
                          f"{p['rows_per_execution']:>9} {p['load_average']:>16}", flush=True)
            ov = overhead(server, "delay0", src, feeds, dts, args.rounds, 5)
            ov["load_average"] = load_average()
            out["overhead"] = ov
            print(f"served latency at concurrency 1: {ov['served_c1_ms']} ms vs in-process Engine.run "
                  f"{ov['in_process_ms']} ms (main thread) -> overhead {ov['overhead_ms']} ms; vs an execution "
                  f"context on a worker thread (as the server runs it) {ov['in_process_context_thread_ms']} ms -> "
                  f"overhead {ov['overhead_vs_context_ms']} ms (medians of {args.rounds} interleaved rounds; per "
                  f"round {ov['overhead_vs_context_ms_per_round']}); load average {ov['load_average']}")
        finally:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
