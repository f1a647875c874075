"""Measurement: side-by-side timing of engines and peers."""

from tensorkiln.bench.interleave import Runner, SideBySide, measure_side_by_side

__all__ = ["Runner", "SideBySide", "measure_side_by_side"]
