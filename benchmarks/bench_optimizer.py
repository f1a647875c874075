"""Zoo ResNet-50 / GoogLeNet: optimizations off vs on vs onnxruntime, side by side.

Prints batch-1 latency (median, p99) and batch-16 throughput, with ratios to onnxruntime
(the median of per-round ratios; < 1 means faster than onnxruntime). The optimized engine is
built once per batch size with an optimization profile whose ``opt`` shape is that batch
(like ``trtexec --optShapes``), so its tactics are timed at the batch it runs.

    python benchmarks/bench_optimizer.py [--models resnet50,googlenet] [--rounds 15]
"""

from __future__ import annotations

import argparse

import onnxruntime as ort
import torch

import tensorkiln
from tensorkiln import zoo
from tensorkiln.bench import Runner, measure_side_by_side
from tensorkiln.bench.interleave import SETTLE_S


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="resnet50,googlenet")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--settle", type=float, default=SETTLE_S,
                    help="seconds before each runtime's warm-up (onnxruntime's threads spin after a run)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads}  rounds: {args.rounds}")
    print(f"{'model':10} {'batch':>5} {'runtime':14} {'median ms':>10} {'p99 ms':>9} {'img/s':>8} {'vs ORT':>7}")
    for name in args.models.split(","):
        path = zoo.get(name)
        off = tensorkiln.build(path, optimize=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for b in (int(x) for x in args.batches.split(",")):
            feeds = zoo.sample_inputs(name, batch=b)
            profile = {k: {"min": v.shape, "opt": v.shape, "max": v.shape} for k, v in feeds.items()}
            on = tensorkiln.build(path, shapes=profile, progress=True)
            runners = [
                Runner("tk-opt-off", lambda f=feeds, e=off: e.run(f), b),
                Runner("tk-opt-on", lambda f=feeds, e=on: e.run(f), b),
                Runner("onnxruntime", lambda f=feeds, s=sess: s.run(None, f), b),
            ]
            res = measure_side_by_side(runners, rounds=args.rounds if b == 1 else max(5, args.rounds // 3),
                                       baseline="onnxruntime", settle_s=args.settle)
            for r in runners:
                med = res.median(r.name)
                print(f"{name:10} {b:5d} {r.name:14} {med:10.2f} {res.p99(r.name):9.2f} "
                      f"{b * 1000 / med:8.1f} {res.ratio(r.name):7.3f}")
            if b == 1:
                print(f"{name}: steps {off.num_steps} -> {on.num_steps}")


if __name__ == "__main__":
    main()
