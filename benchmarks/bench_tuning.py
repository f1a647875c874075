"""Autotuning figures: cold vs warm timing-cache build, replayable choices, per-layer profile.

    python benchmarks/bench_tuning.py [--model resnet50] [--batch 1] [--level 2]

1. Builds the model with a fresh timing cache (cold: every tactic of every layer is timed),
   then twice more with that cache (warm), and prints the build times and their ratio.
2. Checks that the two warm builds chose the same tactic for every layer (and the cold one).
3. Prints the tactic histogram and the per-layer profile of the warm engine (like
   ``tensorkiln run ENGINE --profile``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

import tensorkiln
from tensorkiln import zoo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--top", type=int, default=60)
    args = ap.parse_args()
    path = zoo.get(args.model)
    feeds = zoo.sample_inputs(args.model, batch=args.batch)
    shapes = {k: {"min": v.shape, "opt": v.shape, "max": v.shape} for k, v in feeds.items()}
    cache = Path(tempfile.mkdtemp()) / "timing.json"
    times, engines = [], []
    for label in ("cold", "warm", "warm again"):
        t0 = time.perf_counter()
        e = tensorkiln.build(path, shapes=shapes, opt_level=args.level, timing_cache=str(cache))
        times.append(time.perf_counter() - t0)
        engines.append(e)
        st = e.tuning_stats
        print(f"{label:10} build {times[-1]:6.1f} s  timing cache hits {st.get('cache_hits')} "
              f"misses {st.get('cache_misses')}  (load {os.getloadavg()[0]:.1f})")
    print(f"cold / warm build time: {times[0] / times[1]:.1f}x")
    choices = [{r["node"]: r["chosen"] for r in e.tuning} for e in engines]
    same = choices[1] == choices[2]
    print(f"warm builds chose identical tactics for all {len(choices[1])} tunable layers: {same}; "
          f"cold and warm identical: {choices[0] == choices[1]}")
    print("tactics chosen:", dict(Counter(choices[1].values())))
    torch.set_num_threads(torch.get_num_threads())
    prof = engines[1].profile(feeds, runs=10)
    total = sum(p["ms"] for p in prof)
    print(f"\nper-layer profile of the warm engine ({args.model}, batch {args.batch}; median of 10 runs, "
          f"total {total:.2f} ms):")
    print(f"{'#':>3} {'op':16} {'tactic':13} {'ms':>7} {'share':>6}  ONNX nodes")
    steps = engines[1].steps()
    for p, s in list(zip(prof, steps))[:args.top]:
        print(f"{p['index']:3d} {p['op'].split('::')[-1]:16} {s.get('tactic') or '-':13} {p['ms']:7.3f} "
              f"{100 * p['share']:5.1f}%  {', '.join(p['origin'])[:70]}")


if __name__ == "__main__":
    main()
