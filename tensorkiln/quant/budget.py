"""Accuracy-budgeted layer selection: which candidate layers may run in int8.

1. Fake-quantize every candidate layer; if the metric on the held-out samples stays within
   the budget (``score >= 1 - budget``), all run in int8.
2. Otherwise measure each layer's *sensitivity*: the network-output error (normalized
   squared error vs fp32) with only that layer quantized (on the first held-out batch, at
   most 16 samples).
3. Keep the ``k`` most sensitive layers in fp32, with the smallest ``k`` for which the
   metric holds (binary search over ``k``, then confirmed).

Every evaluation is one fp32 run of the held-out samples with fake-quantization hooks
(``simulate.hooks_for``), the same rounding the int8 engine does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from tensorkiln.ir import Graph, Node
from tensorkiln.quant.calibrate import _feeds, progress_bar
from tensorkiln.quant.metrics import Outputs, distance
from tensorkiln.quant.plan import layer_key
from tensorkiln.quant.runner import GraphRunner
from tensorkiln.quant.simulate import WeightCache, hooks_for


@dataclass
class Selection:
    int8: list[Node]
    fp32: list[Node]
    score_all_int8: float
    score: float  # simulated, with the selection
    sensitivity: dict[str, float] = field(default_factory=dict)  # node name → output error alone
    evaluations: int = 0
    order: list[Node] = field(default_factory=list)  # movable layers, most sensitive first (when measured)


class Evaluator:
    def __init__(self, runner: GraphRunner, graph: Graph, ranges: Mapping[str, tuple[float, float]],
                 batches: list[dict[str, np.ndarray]], ref: Outputs,
                 metric: Callable[[Outputs, Outputs], float]) -> None:
        self.runner, self.graph, self.ranges = runner, graph, ranges
        self.batches, self.ref, self.metric = batches, ref, metric
        self.weights = WeightCache()
        self.count = 0

        # sensitivity ranking runs once per layer: on the first batch only (≤ 16 samples)
        self.sens_batches = [{k: a[:16] for k, a in batches[0].items()}] if batches else []
        self.sens_ref = [[t[:16] for t in ref[0]]] if ref else []

    def outputs(self, layers: list[Node], batches: list[dict[str, np.ndarray]] | None = None) -> Outputs:
        h = hooks_for(self.graph, layers, self.ranges, self.weights)
        self.count += 1
        with torch.inference_mode():
            return [self.runner(_feeds(self.runner, b), **h.kwargs())  # type: ignore[arg-type]
                    for b in (self.batches if batches is None else batches)]

    def sensitivity(self, layer: Node) -> float:
        return distance(self.sens_ref, self.outputs([layer], self.sens_batches))

    def score(self, layers: list[Node]) -> float:
        return self.metric(self.ref, self.outputs(layers))


def select(ev: Evaluator, candidates: list[Node], budget: float | None, forced_int8: set[str] | None = None,
           progress: bool = True) -> Selection:
    """Choose the int8 layers among ``candidates`` (layers in ``forced_int8``, by layer key,
    always stay int8)."""
    forced_int8 = forced_int8 or set()
    s_all = ev.score(candidates)
    if budget is None or s_all >= 1.0 - budget or not candidates:
        return Selection(list(candidates), [], s_all, s_all, evaluations=ev.count)
    movable = [n for n in candidates if layer_key(n) not in forced_int8]
    sens: dict[str, float] = {}
    with progress_bar(progress) as bar:
        task = bar.add_task("layer sensitivity", total=len(movable))
        for n in movable:
            sens[layer_key(n)] = ev.sensitivity(n)
            bar.advance(task)
    order = sorted(movable, key=lambda n: -sens[layer_key(n)])

    def with_top_k_fp32(k: int) -> list[Node]:
        drop = {layer_key(n) for n in order[:k]}
        return [n for n in candidates if layer_key(n) not in drop]

    scores: dict[int, float] = {0: s_all}

    def ok(k: int) -> bool:
        if k not in scores:
            scores[k] = ev.score(with_top_k_fp32(k))
        return scores[k] >= 1.0 - budget

    lo, hi = 0, len(order)  # ok(lo) is False; find the smallest ok k in (lo, hi]
    if not ok(hi):
        k = hi
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
        k = hi
    int8 = with_top_k_fp32(k)
    fp32 = [n for n in candidates if n not in int8]
    by_name = {layer_key(n): n.name for n in candidates}
    return Selection(int8, fp32, s_all, scores[k], {by_name[k_]: v for k_, v in sens.items()}, ev.count, order)

