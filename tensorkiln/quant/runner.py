"""Running a graph for calibration: taps, fake-quantization hooks, replaced weights.

``GraphRunner`` is what calibration needs: run the (fp32, optimized) graph on one batch,
calling ``tap(name, tensor)`` for every value as it is produced, replacing values
(``value_hooks``: every reader sees the hooked tensor) or single inputs of single nodes
(``edge_hooks``: keyed by (layer key, input index)), and running some layers with other
weights (``weights``: layer key → array). The builder hands one in
(:class:`ProgramRunner`, over the CPU backend's lowered program), so ``quant`` never
depends on the runtime or the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from tensorkiln.ir import Graph, Node, Value

Hook = Callable[[torch.Tensor], torch.Tensor]
Tap = Callable[[str, torch.Tensor], None]


class GraphRunner(Protocol):
    input_names: list[str]
    output_names: list[str]

    def __call__(self, feeds: Sequence[torch.Tensor], *, tap: Tap | None = None,
                 value_hooks: Mapping[str, Hook] | None = None,
                 edge_hooks: Mapping[tuple[str, int], Hook] | None = None,
                 weights: Mapping[str, np.ndarray] | None = None) -> list[torch.Tensor]: ...


class ProgramRunner:
    """A :class:`GraphRunner` over a program lowered by ``lower(graph)``; ``make_kernel(node)``
    builds one node's kernel (for replaced weights)."""

    def __init__(self, graph: Graph, lower: Callable[[Graph], Any], make_kernel: Callable[[Node], Any]) -> None:
        self.graph = graph
        self.program = lower(graph)
        self.make_kernel = make_kernel
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self._slot_names: dict[int, str] = {}
        self._step_of: dict[str, int] = {}
        for i, st in enumerate(self.program.steps):
            n: Node = st.node
            for v, s in zip(n.outputs, st.outs):
                self._slot_names[s] = v.name
            if n.outputs:
                self._step_of[n.outputs[0].name] = i
        for v, s in zip(graph.inputs, self.program.input_slots):
            self._slot_names[s] = v.name
        self._alt: dict[tuple[str, int], Any] = {}

    def _kernel_with_weight(self, key: str, w: np.ndarray) -> Any:
        k = (key, id(w))
        hit = self._alt.get(k)
        if hit is None:
            node: Node = self.program.steps[self._step_of[key]].node
            wv = Value(node.inputs[1].name if node.inputs[1] is not None else "w", const=w)  # type: ignore[union-attr]
            clone = Node(node.op_type, [node.inputs[0], wv, *node.inputs[2:]], list(node.outputs), dict(node.attrs),
                         node.name, node.domain, node.opset, origin=list(node.origin))
            kern = self.make_kernel(clone)
            if len(self._alt) > 256:
                self._alt.clear()
            hit = self._alt[k] = (kern, w)  # keep w alive so id(w) stays unique
        return hit[0]

    def __call__(self, feeds: Sequence[torch.Tensor], *, tap: Tap | None = None,
                 value_hooks: Mapping[str, Hook] | None = None,
                 edge_hooks: Mapping[tuple[str, int], Hook] | None = None,
                 weights: Mapping[str, np.ndarray] | None = None) -> list[torch.Tensor]:
        p = self.program
        env = p.template.copy()
        names = self._slot_names
        value_hooks = value_hooks or {}
        edge_hooks = edge_hooks or {}
        weights = weights or {}
        for s, t in zip(p.input_slots, feeds):
            name = names.get(s)
            if name is not None and name in value_hooks:
                t = value_hooks[name](t)
            if tap is not None and name is not None:
                tap(name, t)
            env[s] = t
        for st in p.steps:
            args = [env[i] for i in st.ins]
            node: Node = st.node
            key = node.outputs[0].name if node.outputs else ""
            if edge_hooks:
                for i in range(len(args)):
                    h = edge_hooks.get((key, i))
                    if h is not None and args[i] is not None:
                        args[i] = h(args[i])
            kernel = st.kernel
            if key in weights:
                kernel = self._kernel_with_weight(key, weights[key])
            r = kernel(*args)
            outs = (r,) if len(st.outs) == 1 else tuple(r)
            for s, t in zip(st.outs, outs):
                name = names[s]
                if name in value_hooks:
                    t = value_hooks[name](t)
                if tap is not None:
                    tap(name, t)
                env[s] = t
            for f in st.frees:
                env[f] = None
        return [env[s] for s in p.output_slots]  # type: ignore[misc]
