"""FP16 / BF16: chosen for speed only where this CPU computes in them.

x86 CPUs compute fp16 only with AVX512-FP16 (or AMX-FP16) and bf16 with AVX512-BF16 or
AMX-BF16. Elsewhere (AVX2 with F16C, as on the measured Zen 3) fp16 is a storage format:
PyTorch's fp16/bf16 convolutions and matmuls there run 8–500× slower than fp32
(../shared/MEASURED.md). So ``precision="fp16"|"bf16"|"best"`` keeps fp32 on such a CPU and
the build report says why; ``strict=True`` converts anyway (it runs correctly, slowly).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from tensorkiln.ir import DType, Graph, Node, Value

_FLAGS = {"fp16": {"avx512_fp16", "amx_fp16"}, "bf16": {"avx512_bf16", "amx_bf16"}}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def computes_in(fmt: str) -> bool:
    return bool(cpu_flags() & _FLAGS[fmt])


def decide(precision: str, strict: bool, overrides: Mapping[str, str]) -> dict[str, Any]:
    """{"float_precision": "fp32"|"fp16"|"bf16", "notes": [...]} for the float layers."""
    wanted = [p for p in ("fp16", "bf16") if precision in (p, "best") or p in overrides.values()]
    notes: list[str] = []
    chosen = "fp32"
    for fmt in wanted:
        if computes_in(fmt):
            chosen = fmt
            notes.append(f"{fmt}: this CPU computes in {fmt}; float layers run in {fmt}")
            break
        if strict and precision == fmt:
            chosen = fmt
            notes.append(f"{fmt}: strict=True forces {fmt}, but this CPU has no {fmt} arithmetic "
                         f"({'/'.join(sorted(_FLAGS[fmt]))} missing): it is storage only here and runs slower "
                         "than fp32")
            break
        notes.append(f"{fmt}: storage only on this CPU (no {'/'.join(sorted(_FLAGS[fmt]))}); its kernels would run "
                     "slower than fp32, so float layers stay fp32 (strict=True forces it)")
    return {"float_precision": chosen, "notes": notes}


def convert(graph: Graph, fmt: str, overrides: Mapping[str, str] | None = None) -> int:
    """Run every float32 tensor of ``graph`` in ``fmt``: float32 constants are converted, inputs
    cast on entry and outputs cast back to float32 on exit. Returns the number of nodes that now
    compute in ``fmt``."""
    dt = DType.FLOAT16 if fmt == "fp16" else DType.BFLOAT16
    np_dt = np.float16 if fmt == "fp16" else None
    for v in graph.constants.values():
        if v.const is not None and v.dtype == DType.FLOAT32 and _is_float_param(graph, v):
            if np_dt is not None:
                v.const = v.const.astype(np_dt)
                v.dtype = dt
    n_nodes = 0
    for n in graph.nodes:
        if any(v.dtype == DType.FLOAT32 for v in n.outputs):
            n_nodes += 1
        for v in n.outputs:
            if v.dtype == DType.FLOAT32:
                v.dtype = dt
    for v in list(graph.inputs):
        if v.dtype == DType.FLOAT32:
            _cast_input(graph, v, dt)
    for i, v in enumerate(list(graph.outputs)):
        if v.dtype == dt:
            graph.outputs[i] = _cast_output(graph, v)
    return n_nodes


def _is_float_param(graph: Graph, v: Value) -> bool:
    return True


def _cast_input(graph: Graph, v: Value, dt: DType) -> None:
    nv = Value(graph.fresh_name(f"{v.name}_{dt.short}"), dt, v.shape)
    uses = list(v.uses)
    node = Node("Cast", [v], [nv], {"to": dt.value}, graph.fresh_name(f"{v.name}_cast"), "", 19)
    for m, j in uses:
        m.inputs[j] = nv
        nv.uses.append((m, j))
    v.uses = []
    graph.nodes.insert(0, node)
    v.uses.append((node, 0))
    nv.producer = node


def _cast_output(graph: Graph, v: Value) -> Value:
    out = Value(v.name, DType.FLOAT32, v.shape)
    v.name = graph.fresh_name(f"{v.name}_lowp")
    node = Node("Cast", [v], [out], {"to": DType.FLOAT32.value}, graph.fresh_name(f"{out.name}_cast"), "", 19)
    graph.add_node(node)
    return out
