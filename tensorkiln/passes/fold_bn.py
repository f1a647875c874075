"""Fold inference BatchNormalization into the preceding Conv's weights and bias.

# before -> after:  y = BatchNormalization(Conv(x, W, b), s, B, m, v)  ->  y = Conv(x, W', b')
with W' = W * s/sqrt(v+eps) (per output channel) and b' = (b - m) * s/sqrt(v+eps) + B.
"""

from __future__ import annotations

import numpy as np

from tensorkiln.ir import Graph, Node
from tensorkiln.passes.rewrite import RuleReport, consumer_reason

REPORT_NAME = "fold-batchnorm"


def check(graph: Graph, bn: Node) -> str | None:
    x = bn.inputs[0]
    if x is None or x.producer is None:
        return "BatchNormalization input is not produced by a node"
    conv = x.producer
    if conv.op_type != "Conv" or conv.domain != "":
        return f"input comes from {conv.op_type}, not Conv"
    reason = consumer_reason(graph, x)
    if reason:
        return f"the Conv output {reason}"
    if len(bn.outputs) > 1 and any(o.uses for o in bn.outputs[1:]):
        return "BatchNormalization training outputs are used"
    if bn.attrs.get("training_mode", 0):
        return "BatchNormalization is in training mode"
    params = bn.inputs[1:5]
    if len(params) < 4 or not all(p is not None and p.is_const for p in params):
        return "BatchNormalization scale/bias/mean/var are not constants"
    w = conv.inputs[1]
    if w is None or not w.is_const:
        return "Conv weight is not a constant"
    if len(conv.inputs) > 2 and conv.inputs[2] is not None and not conv.inputs[2].is_const:
        return "Conv bias is not a constant"
    assert w.const is not None
    if w.const.dtype not in (np.float32, np.float64):
        return f"Conv weight dtype {w.const.dtype} (only float32/64 are folded)"
    return None


def rewrite(graph: Graph, bn: Node) -> None:
    x = bn.inputs[0]
    assert x is not None and x.producer is not None
    conv = x.producer
    s, B, m, v = (p.const for p in bn.inputs[1:5])  # type: ignore[union-attr]
    eps = float(bn.attrs.get("epsilon", 1e-5))
    w = conv.inputs[1].const  # type: ignore[union-attr]
    assert w is not None and s is not None and B is not None and m is not None and v is not None
    acc = np.float64
    k = (s.astype(acc) / np.sqrt(v.astype(acc) + eps))
    new_w = (w.astype(acc) * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    b0 = conv.inputs[2].const if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
    b = np.zeros(w.shape[0], acc) if b0 is None else b0.astype(acc)
    new_b = ((b - m.astype(acc)) * k + B.astype(acc)).astype(w.dtype)
    wv = graph.add_constant(graph.fresh_name(f"{conv.name}_W_bnfolded"), new_w)
    bv = graph.add_constant(graph.fresh_name(f"{conv.name}_B_bnfolded"), new_b)
    old_w = conv.inputs[1]
    assert old_w is not None
    old_w.uses = [(n, i) for (n, i) in old_w.uses if n is not conv]
    conv.inputs[1] = wv
    wv.uses.append((conv, 1))
    if len(conv.inputs) > 2 and conv.inputs[2] is not None:
        ob = conv.inputs[2]
        ob.uses = [(n, i) for (n, i) in ob.uses if n is not conv]
        conv.inputs[2] = bv
    else:
        while len(conv.inputs) < 3:
            conv.inputs.append(None)
        conv.inputs[2] = bv
    bv.uses.append((conv, 2))
    conv.origin = [*conv.origin, *bn.origin]
    y = bn.outputs[0]
    graph.remove_node(bn)
    graph.replace_all_uses(y, x)
    if any(o is x for o in graph.outputs):
        x.name = y.name


def run(graph: Graph, report: RuleReport | None = None) -> bool:
    report = report if report is not None else RuleReport()
    changed = False
    for node in list(graph.nodes):
        if node.op_type != "BatchNormalization" or node.domain != "":
            continue
        reason = check(graph, node)
        if reason:
            report.reject(node, reason)
            continue
        rewrite(graph, node)
        report.fired += 1
        changed = True
    return changed
