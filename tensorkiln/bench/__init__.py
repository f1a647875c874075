"""Measurement and accuracy: trtexec-style timing, peers side by side, budgets, reports, comparisons."""

from tensorkiln.bench.interleave import Runner, SideBySide, measure_side_by_side
from tensorkiln.bench.session import Bench, BenchSettings

__all__ = ["Bench", "BenchSettings", "Runner", "SideBySide", "measure_side_by_side"]
