"""FP16 / BF16 layers: chosen for speed only where this CPU computes in them.

x86 CPUs compute fp16 only with AVX512-FP16 (or AMX-FP16) and bf16 with AVX512-BF16 or
AMX-BF16. Elsewhere (AVX2 with F16C, as on the measured Zen 3) fp16 is a storage format:
PyTorch's fp16/bf16 convolutions and matmuls there run 8–500× slower than fp32
(../shared/MEASURED.md). So ``precision="fp16"|"bf16"|"best"`` keeps fp32 on such a CPU and
the build report says why; ``strict=True`` converts anyway (it runs correctly, slowly).

On a CPU that computes in the format, converted layers would run their arithmetic in it. On
one that only stores it (``strict=True`` here), a converted layer does what such hardware does
with fp16/bf16 data: its weights and its output are stored in the low precision (rounded to
it) and the arithmetic is fp32 — the numerics of the low-precision storage at about fp32 speed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tensorkiln.ir import DType, Graph, Node, Value

_FLAGS = {"fp16": {"avx512_fp16", "amx_fp16"}, "bf16": {"avx512_bf16", "amx_bf16"}}
_DTYPES = {"fp16": DType.FLOAT16, "bf16": DType.BFLOAT16}
LAYERS = {"FusedConv", "FusedGemm"}


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
        missing = "/".join(sorted(_FLAGS[fmt]))
        if computes_in(fmt):
            chosen = fmt
            notes.append(f"{fmt}: this CPU computes in {fmt}; float layers run in {fmt}")
            break
        if strict and (precision == fmt or fmt in overrides.values()):
            chosen = fmt
            notes.append(f"{fmt}: strict=True forces {fmt}, but this CPU has no {fmt} arithmetic ({missing} "
                         f"missing): weights and layer outputs are stored in {fmt}, arithmetic stays fp32")
            break
        notes.append(f"{fmt}: storage only on this CPU (no {missing}); its kernels would run slower than fp32, "
                     "so float layers stay fp32 (strict=True forces it)")
    return {"float_precision": chosen, "notes": notes}


def round_to(a: np.ndarray, fmt: str) -> np.ndarray:
    """``a`` rounded to fp16 / bf16 (round to nearest even), as float32."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a, np.float32))
    return t.to(torch.float16 if fmt == "fp16" else torch.bfloat16).to(torch.float32).numpy()


def convert(graph: Graph, fmt: str, wanted: Callable[[Node], bool]) -> list[str]:
    """Store the weights and outputs of the layers ``wanted(node)`` selects in ``fmt`` (see the
    module doc); returns their names."""
    dt = _DTYPES[fmt]
    done: list[str] = []
    for node in list(graph.nodes):
        if node.domain != "tensorkiln" or node.op_type not in LAYERS or not wanted(node):
            continue
        y = node.outputs[0]
        if y.dtype not in (DType.FLOAT32, None):
            continue
        for i, v in enumerate(node.inputs[1:3], start=1):
            if v is not None and v.const is not None and v.const.dtype == np.float32:
                _rewire(node, i, graph.add_constant(graph.fresh_name(f"{v.name}_{fmt}"), round_to(v.const, fmt)))
        # y = layer(...) → y_lp = layer(...) stored as fmt → y = Cast(y_lp, float32)
        pre = Value(graph.fresh_name(f"{y.name}_fp32acc"), DType.FLOAT32, y.shape)
        low = Value(graph.fresh_name(f"{y.name}_{fmt}"), dt, y.shape)
        node.outputs[0] = pre
        pre.producer = node
        at = graph.nodes.index(node) + 1
        to_low = Node("Cast", [pre], [low], {"to": dt.value}, graph.fresh_name(f"{node.name}_to_{fmt}"), "", 19)
        to_f32 = Node("Cast", [low], [y], {"to": DType.FLOAT32.value}, graph.fresh_name(f"{node.name}_to_fp32"),
                      "", 19)
        graph.nodes[at:at] = [to_low, to_f32]
        pre.uses.append((to_low, 0))
        low.producer = to_low
        low.uses.append((to_f32, 0))
        y.producer = to_f32
        node.attrs["precision"] = fmt
        done.append(node.name)
    return done


def _rewire(node: Node, i: int, v: Value) -> None:
    old = node.inputs[i]
    if old is not None:
        old.uses = [(n, j) for (n, j) in old.uses if not (n is node and j == i)]
    node.inputs[i] = v
    v.uses.append((node, i))
