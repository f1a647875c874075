"""Quantization: calibration (statistics, range methods, cache), int8 layer plans, accuracy budget.

Layer 1: never imports ``runtime`` or ``engine``; the builder hands in a
:class:`~tensorkiln.quant.runner.GraphRunner` that runs the fp32 graph.
"""

from tensorkiln.quant.calibrate import CALIBRATORS, Calibration, TensorRange, choose_ranges, collect
from tensorkiln.quant.methods import METHODS, compute_range
from tensorkiln.quant.observer import NUM_BINS, Observer, TensorStats
from tensorkiln.quant.plan import QuantPlan
from tensorkiln.quant.precision import PRECISIONS, Int8Result, plan_int8
from tensorkiln.quant.qparams import QParams, has_vnni, quantize_weight
from tensorkiln.quant.runner import GraphRunner, ProgramRunner

__all__ = [
    "CALIBRATORS",
    "METHODS",
    "NUM_BINS",
    "PRECISIONS",
    "Calibration",
    "GraphRunner",
    "Int8Result",
    "Observer",
    "ProgramRunner",
    "QParams",
    "QuantPlan",
    "TensorRange",
    "TensorStats",
    "choose_ranges",
    "collect",
    "compute_range",
    "has_vnni",
    "plan_int8",
    "quantize_weight",
]
