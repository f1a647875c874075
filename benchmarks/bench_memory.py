"""Planned vs measured activation memory (zoo ResNet-50, batch 16 by default).

    python benchmarks/bench_memory.py [--model resnet50] [--batch 16]

Prints the planner's figures (naive sum of all intermediates, planned peak with release
at last use, arena size) and the measured growth of the process's peak RSS during one run
(VmHWM reset through /proc/self/clear_refs just before the run), plus the weights.
"""

from __future__ import annotations

import argparse
import os

# Measure with glibc's default behaviour, which returns freed activation memory to the
# system: tensorkiln's allocator tuning would keep the previous run's memory mapped and hide
# the growth (the RSS then stays flat at the peak, which is what a server wants).
os.environ.setdefault("TENSORKILN_MALLOC", "default")

import tensorkiln
from tensorkiln import zoo


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    eng = tensorkiln.build(zoo.get(args.model))
    small = zoo.sample_inputs(args.model, batch=1)
    feeds = zoo.sample_inputs(args.model, batch=args.batch)
    plan = eng.memory_plan(feeds)  # runs once at this batch: weight packings for it are made here
    eng.run(small)
    rss0 = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS high-water mark
    eng.run(feeds)
    peak = status_kb("VmHWM")
    grew = (peak - rss0) / 1024
    inputs_mb = sum(a.nbytes for a in feeds.values()) / 1e6
    print(f"{args.model} batch {args.batch}: naive sum of intermediates {plan.naive_bytes / 1e6:.1f} MB, "
          f"planned peak {plan.peak_bytes / 1e6:.1f} MB ({100 * plan.peak_bytes / plan.naive_bytes:.1f} % of naive), "
          f"arena {plan.arena_bytes / 1e6:.1f} MB, weights {eng.weight_bytes() / 1e6:.1f} MB, "
          f"inputs {inputs_mb:.1f} MB")
    mode = os.environ["TENSORKILN_MALLOC"]
    print(f"measured (TENSORKILN_MALLOC={mode}): RSS before the run {rss0 / 1024:.1f} MiB, "
          f"peak during it {peak / 1024:.1f} MiB "
          f"→ grew {grew:.1f} MiB = {grew * 1.048576:.1f} MB (planned peak {plan.peak_bytes / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
