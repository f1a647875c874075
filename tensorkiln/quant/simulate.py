"""Fake quantization: run the fp32 graph as the int8 engine would compute it.

For a set of int8 layers, :func:`hooks_for` gives the runner hooks that round exactly the
tensors the int8 rewrite stores or reads as uint8 (``plan.plan_storage``) to their grids,
and the layers' weights rounded per output channel. Integer accumulation is exact in the
int8 kernels and nearly so in fp32, so the simulation matches the built engine closely —
and costs one fp32 run per evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from tensorkiln.ir import Graph, Node
from tensorkiln.quant.plan import layer_key, plan_storage
from tensorkiln.quant.qparams import QMAX, QMIN, QParams, dequantize_weight, quantize_weight
from tensorkiln.quant.runner import Hook


def fake_quant(p: QParams) -> Hook:
    s, z = p.scale, p.zero_point

    def fq(t: torch.Tensor) -> torch.Tensor:
        if t.dtype != torch.float32:
            return t
        return torch.fake_quantize_per_tensor_affine(t, s, z, QMIN, QMAX)

    return fq


@dataclass
class Hooks:
    value_hooks: dict[str, Hook] = field(default_factory=dict)
    edge_hooks: dict[tuple[str, int], Hook] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def kwargs(self) -> dict[str, object]:
        return {"value_hooks": self.value_hooks, "edge_hooks": self.edge_hooks, "weights": self.weights}


class WeightCache:
    """Fake-quantized weights per layer, computed once."""

    def __init__(self) -> None:
        self._w: dict[str, np.ndarray] = {}

    def get(self, n: Node) -> np.ndarray:
        key = layer_key(n)
        w = self._w.get(key)
        if w is None:
            c = n.inputs[1].const  # type: ignore[union-attr]
            assert c is not None
            w = self._w[key] = dequantize_weight(*quantize_weight(c))
        return w


def hooks_for(graph: Graph, layers: list[Node], ranges: Mapping[str, tuple[float, float]],
              weights: WeightCache | None = None) -> Hooks:
    st = plan_storage(graph, layers)
    h = Hooks()
    for n in graph.nodes:
        for v in n.outputs:
            if id(v) in st.stored and id(n) not in st.transparent:
                h.value_hooks[v.name] = fake_quant(QParams.from_range(*ranges[st.param_source[id(v)].name]))
    for n, i in st.edges:
        e = n.inputs[i]
        assert e is not None
        if id(e) not in st.stored:
            h.edge_hooks[(layer_key(n), i)] = fake_quant(QParams.from_range(*ranges[e.name]))
    wc = weights or WeightCache()
    for n in layers:
        h.weights[layer_key(n)] = wc.get(n)
    return h
