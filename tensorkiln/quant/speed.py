"""Int8 only where it is faster: each int8 layer's kernel timed against its float kernel.

With ``precision="int8"`` (not ``strict``), a layer the accuracy budget allows in int8 still
stays fp32 when its int8 kernel — as the plan would run it: quantizing a float input inside,
writing uint8 or float32 — is clearly slower than the float kernel on the same input (more
than ``margin`` slower; measured in interleaved rounds, the median of per-round ratios, since
the machine may be shared). Small layers whose input must be quantized first are the usual
losers (tiny Gemm layers, depthwise convolutions, 1x1 layers on small maps). Timing makes
the choice depend on the machine and its load, like any autotuning: ``opt_level=0`` skips it
(int8 wherever the accuracy budget allows), and the build report lists the timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from tensorkiln.ir import Graph, Node
from tensorkiln.quant.calibrate import _feeds
from tensorkiln.quant.plan import QuantPlan, int8_edges, layer_key
from tensorkiln.quant.runner import GraphRunner


def _time_pair(a: Callable[[], Any], b: Callable[[], Any], rounds: int) -> tuple[float, float, float]:
    """(median ms of a, median ms of b, median of per-round b/a)."""
    a()
    b()
    ta: list[float] = []
    tb: list[float] = []
    clock = time.perf_counter
    for i in range(rounds):
        for f, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            f()  # untimed: wake the threads
            t0 = clock()
            f()
            out.append(clock() - t0)
    ratio = float(np.median([y / x for x, y in zip(ta, tb)]))
    return float(np.median(ta)) * 1e3, float(np.median(tb)) * 1e3, ratio


def time_layers(graph: Graph, runner: GraphRunner, make_kernel: Callable[[Node], Any], layers: list[Node],
                ranges: Mapping[str, tuple[float, float]], sample: Mapping[str, np.ndarray],
                rounds: int = 7) -> dict[str, tuple[float, float, float]]:
    """Layer key → (fp32 ms, int8 ms, int8/fp32) for ``layers`` as planned all together."""
    from tensorkiln.passes.quantize import int8_node, stored_params

    plan = QuantPlan([layer_key(n) for n in layers], dict(ranges))
    st, qp = stored_params(graph, plan, layers)
    wanted = {v.name for n in layers for i in int8_edges(n) if (v := n.inputs[i]) is not None}
    captured: dict[str, torch.Tensor] = {}

    def tap(name: str, t: torch.Tensor) -> None:
        if name in wanted:
            captured[name] = t.clone()

    with torch.inference_mode():
        runner(_feeds(runner, sample), tap=tap)
    out: dict[str, tuple[float, float, float]] = {}
    with torch.inference_mode():
        for n in layers:
            args_f: list[Any] = [None] * len(n.inputs)
            args_q: list[Any] = [None] * 5
            for i in int8_edges(n):
                v = n.inputs[i]
                if v is None or v.name not in captured:
                    break
                t = captured[v.name]
                args_f[i] = t
                qi = 4 if i == 3 else i
                if id(v) in st.stored:
                    p = qp[id(v)]
                    t = torch.clamp(torch.round(t / p.scale) + p.zero_point, 0, 255).to(torch.uint8)
                args_q[qi] = t
            else:
                fk = _bind(make_kernel(n), args_f)
                qk = _bind(make_kernel(int8_node(n, plan, st.stored, qp)), args_q if n.op_type == "FusedConv"
                           else args_q[:4])
                out[layer_key(n)] = _time_pair(fk, qk, rounds)
    return out


def _bind(kernel: Callable[..., Any], args: list[Any]) -> Callable[[], Any]:
    return lambda: kernel(*args)
