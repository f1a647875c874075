"""MatMul/Gemm + bias + activation → one ``tensorkiln::FusedGemm`` step on a prepacked weight.

# before -> after:  y = Act(Add(MatMul(x, W), b))        ->  y = FusedGemm(x, Wᵀ, b){activation=Act}
# before -> after:  y = Act(Gemm(x, B, C){transB,α,β})   ->  y = FusedGemm(x, α·op(B)ᵀ, β·C){activation=Act}

FusedGemm computes act(x @ Wᵀ + b) over the last axis of x (W is [N, K], stored once).
"""

from __future__ import annotations

import numpy as np

from tensorkiln.ir import Graph, Node, Value
from tensorkiln.passes.fuse_conv import activation_of
from tensorkiln.passes.match import is_op, only_reader, other_input, splice
from tensorkiln.passes.rewrite import RuleReport

DOMAIN = "tensorkiln"


def _weight_of(node: Node) -> tuple[np.ndarray, np.ndarray | None] | str:
    """(W as [N, K], bias [N] or None) for a MatMul/Gemm with a constant right operand."""
    b = node.inputs[1]
    if b is None or b.const is None:
        return "right operand is not a constant"
    w = b.const
    if w.dtype != np.float32 or w.ndim != 2:
        return f"weight is {w.dtype} rank {w.ndim}; FusedGemm takes a float32 2-D weight"
    if node.op_type == "MatMul":
        return np.ascontiguousarray(w.T), None
    if int(node.attrs.get("transA", 0)):
        return "Gemm with transA"
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    wt = w if int(node.attrs.get("transB", 0)) else w.T
    wt = np.ascontiguousarray(wt * np.float32(alpha)) if alpha != 1.0 else np.ascontiguousarray(wt)
    c = node.inputs[2] if len(node.inputs) > 2 else None
    if c is None or beta == 0.0:
        return wt, None
    if c.const is None:
        return "Gemm C is not a constant"
    n = wt.shape[0]
    if c.const.size not in (1, n) or (c.const.ndim == 2 and c.const.shape[0] != 1):
        return f"Gemm C has shape {c.const.shape}, not a per-column bias"
    bias = np.broadcast_to(c.const.astype(np.float32).reshape(-1), (n,)) * np.float32(beta)
    return wt, np.ascontiguousarray(bias)


def run(graph: Graph, report: RuleReport) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node not in graph.nodes or not is_op(node, "MatMul", "Gemm"):
            continue
        x = node.inputs[0]
        wb = _weight_of(node)
        if isinstance(wb, str):
            report.reject(node, wb)
            continue
        if x is None or x.shape is None or (len(x.shape) < 2 and node.op_type == "MatMul"):
            report.reject(node, "left operand rank unknown or < 2")
            continue
        w, bias = wb
        absorbed = [node]
        out = node.outputs[0]
        bias_v: Value | None = None
        nxt = only_reader(graph, out)
        if bias is None and is_op(nxt, "Add"):
            assert nxt is not None
            other = other_input(nxt, out)
            if other is not None and other.const is not None and other.const.size == w.shape[0] \
                    and other.const.shape[-1:] == (w.shape[0],) and other.const.dtype == np.float32:
                bias = np.ascontiguousarray(other.const.reshape(-1))
                absorbed.append(nxt)
                out = nxt.outputs[0]
                nxt = only_reader(graph, out)
            else:
                report.reject(nxt, "Add is not a per-column constant bias")
        act: tuple[str, list[float]] | None = None
        if nxt is not None:
            if nxt.domain == "tensorkiln" and nxt.op_type == "Gelu":
                act = ("GeluTanh" if nxt.attrs.get("approximate") == "tanh" else "Gelu", [])
            else:
                a = activation_of(graph, nxt)
                act = None if isinstance(a, str) else a
            if act is not None:
                absorbed.append(nxt)
                out = nxt.outputs[0]
        wv = graph.add_constant(graph.fresh_name(f"{node.name}_W_packed"), w)
        if bias is not None:
            bias_v = graph.add_constant(graph.fresh_name(f"{node.name}_bias"), bias)
        fused = Node(op_type="FusedGemm", inputs=[x, wv, bias_v], outputs=[out],
                     attrs={"activation": act[0] if act else "", "activation_params": act[1] if act else []},
                     name=node.name, domain=DOMAIN, opset=1, origin=[o for n in absorbed for o in n.origin])
        splice(graph, absorbed, fused)
        report.fired += 1
        changed = True
    return changed
