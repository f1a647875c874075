"""Overload: an open-loop generator at about 3x the server's capacity, with max_queue_size set.

Checks that admitted requests keep a bounded p99, the rest get a 503 decided at once (the server's
own time for it; the client-side p99 is reported), no request is lost or
answered twice (every request gets exactly one answer carrying its own id, and the server's success
and failure counts add up to what was sent), and the server's RSS stays flat.

    python benchmarks/serve_overload.py [--model resnet50|mobilenetv2|synthetic] [--duration 30]

Exit status 1 when a check fails. The server runs in a subprocess (its RSS is its own).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_common import add_model, load_average, model_source

from tensorkiln.serve.loadgen import ServerProcess, Target, closed_loop, open_loop


def run(model: str, duration: float, factor: float, max_queue: int, delay_us: int, max_batch: int,
        capacity_s: float = 8.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="tk-overload-") as tmp:
        root = Path(tmp) / "repo"
        src, feeds, dts = model_source(model, Path(tmp))
        add_model(root, "m", src, f"""
            max_batch_size: {max_batch}
            dynamic_batching {{
              max_queue_delay_microseconds: {delay_us}
              default_queue_policy {{ max_queue_size: {max_queue} }}
            }}
            """)
        server = ServerProcess(str(root))
        try:
            target = Target(server.http_url, "m", feeds, dts)
            # capacity: closed loop with enough clients to keep full batches (the server's best throughput)
            cap = closed_loop(target, 2 * max_batch, capacity_s, warmup_s=2.0)
            capacity = cap.throughput()
            rate = capacity * factor
            before = server.stats("m")
            rss = [server.rss_mb()]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(1.0):
                    rss.append(server.rss_mb())

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            res = open_loop(target, rate, duration, workers=max(64, int(rate * 2)))
            stop.set()
            sampler.join()
            time.sleep(0.5)
            after = server.stats("m")
        finally:
            code = server.stop()
    d_ok = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    d_fail = after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"]
    d_fail_ns = after["inference_stats"]["fail"]["ns"] - before["inference_stats"]["fail"]["ns"]
    d_ok_ns = after["inference_stats"]["success"]["ns"] - before["inference_stats"]["success"]["ns"]
    answered = sum(res.status.values())
    quarter = max(1, len(rss) // 4)
    out = {
        "model": model, "load_average": load_average(), "capacity_rps": round(capacity, 1),
        "capacity_p99_ms": round(cap.pct(cap.latency_ok, 99), 1), "offered_rps": round(rate, 1),
        "duration_s": duration, "max_queue_size": max_queue, "max_queue_delay_us": delay_us,
        **res.summary(), "admitted_rps": round(res.ok / res.elapsed, 1),
        "generator_late_p99_ms": round(res.pct(res.lateness, 99), 1),
        "server_success": d_ok, "server_fail": d_fail,
        "server_rejection_mean_ms": round(d_fail_ns / max(1, d_fail) / 1e6, 3),
        "server_admitted_mean_ms": round(d_ok_ns / max(1, d_ok) / 1e6, 3),
        "rss_mb_start": round(rss[0], 1), "rss_mb_end": round(rss[-1], 1), "rss_mb_max": round(max(rss), 1),
        "rss_mb_first_quarter_max": round(max(rss[:quarter]), 1),
        "rss_mb_last_quarter_max": round(max(rss[-quarter:]), 1),
        "server_exit": code,
    }
    checks = {
        "every request answered once": answered == res.sent and res.errors == 0,
        "answers carry their own id": res.wrong_id == 0,
        "server counts add up": d_ok == res.ok and d_ok + d_fail == res.sent,
        "only 200 and 503": set(res.status) <= {200, 503},
        "overload rejected some": res.status.get(503, 0) > 0,
        # rejected at once, never queued: the server's own time for a rejection (from the handler's
        # start, the body read, to the 503) against an admitted request's. The client-side p99 is
        # reported above but not checked: on this 2-core machine the load generator, the front end
        # and the kernels share the cores, and at 3x capacity a 503 waits mostly for the front
        # end's event loop to read its body (measured: 0.7 ms in the handler, 150-215 ms p99 at the
        # client; it rose when the engine got faster, since 3x capacity became more requests)
        "503s are decided at once (server-side mean < 10% of an admitted request's)":
            out["server_rejection_mean_ms"] < 0.1 * out["server_admitted_mean_ms"],
        "admitted p99 bounded": res.pct(res.latency_ok, 99) < 10 * max(cap.pct(cap.latency_ok, 99), 1.0),
        "RSS flat (last quarter within 10% + 30 MB of first)":
            out["rss_mb_last_quarter_max"] <= out["rss_mb_first_quarter_max"] * 1.10 + 30,
    }
    out["checks"] = checks
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--factor", type=float, default=3.0, help="offered load / measured capacity")
    ap.add_argument("--max-queue-size", type=int, default=16)
    ap.add_argument("--delay-us", type=int, default=5000)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--capacity-s", type=float, default=8.0, help="closed-loop seconds to measure capacity")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    out = run(args.model, args.duration, args.factor, args.max_queue_size, args.delay_us, args.max_batch,
              args.capacity_s)
    for k, v in out.items():
        if k != "checks":
            print(f"{k:28} {v}")
    ok = True
    for name, passed in out["checks"].items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
        ok &= passed
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
