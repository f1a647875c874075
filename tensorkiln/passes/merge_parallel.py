"""Merge parallel 1x1 convolutions that read the same tensor (GoogLeNet's inception branches).

# before -> after:  a = FusedConv(x, Wa, ba); b = FusedConv(x, Wb, bb)
#                   ->  ab = FusedConv(x, [Wa;Wb], [ba;bb]); a, b = SplitChannels(ab)

One convolution with more output channels replaces several; the outputs are channel views
of its result (no copies). Only 1x1, stride 1, no padding, ungrouped convolutions with the
same activation and no residual are merged.
"""

from __future__ import annotations

import numpy as np

from tensorkiln.ir import Graph, Node, Value
from tensorkiln.passes.rewrite import RuleReport

DOMAIN = "tensorkiln"


def _key(node: Node) -> tuple[object, ...] | str:
    if node.domain != DOMAIN or node.op_type != "FusedConv":
        return "not a FusedConv"
    w = node.inputs[1]
    if w is None or w.const is None or w.const.shape[2:] != (1, 1):
        return "kernel is not 1x1"
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        return "has a residual input"
    a = node.attrs
    if any(s != 1 for s in a.get("strides", [1, 1])) or any(p != 0 for p in a.get("pads", [0, 0, 0, 0])):
        return "strided or padded"
    if int(a.get("group", 1)) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
        return "grouped or dilated"
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
        return "auto_pad"
    return (a.get("activation", ""), tuple(a.get("activation_params", [])), a.get("layout", ""))


def run(graph: Graph, report: RuleReport) -> bool:
    groups: dict[tuple[int, tuple[object, ...]], list[Node]] = {}
    for node in graph.nodes:
        if node.domain != DOMAIN or node.op_type != "FusedConv":
            continue
        k = _key(node)
        if isinstance(k, str):
            continue
        x = node.inputs[0]
        if x is None:
            continue
        groups.setdefault((id(x), k), []).append(node)
    changed = False
    for (_, _), nodes in groups.items():
        if len(nodes) < 2:
            continue
        _merge(graph, nodes)
        report.fired += 1
        changed = True
    # explain 1x1 convolutions that stayed alone although a sibling reads the same input
    for node in graph.nodes:
        if node.domain == DOMAIN and node.op_type == "FusedConv":
            k = _key(node)
            x = node.inputs[0]
            if isinstance(k, str) and x is not None and sum(
                    1 for n, _ in x.uses if n.op_type == "FusedConv") > 1:
                report.reject(node, f"not merged with its siblings: {k}")
    return changed


def _merge(graph: Graph, nodes: list[Node]) -> None:
    first = nodes[0]
    ws = [n.inputs[1].const for n in nodes]  # type: ignore[union-attr]
    bs = []
    for n, w in zip(nodes, ws):
        b = n.inputs[2] if len(n.inputs) > 2 else None
        assert w is not None
        bs.append(b.const if b is not None and b.const is not None else np.zeros(w.shape[0], w.dtype))
    w_all = np.ascontiguousarray(np.concatenate(ws, axis=0))  # type: ignore[arg-type]
    b_all = np.ascontiguousarray(np.concatenate(bs, axis=0))
    wv = graph.add_constant(graph.fresh_name(f"{first.name}_W_merged"), w_all)
    bv = graph.add_constant(graph.fresh_name(f"{first.name}_B_merged"), b_all)
    x = first.inputs[0]
    merged_out = Value(graph.fresh_name(f"{first.name}_merged"), first.outputs[0].dtype)
    merged = Node("FusedConv", [x, wv, bv, None], [merged_out], attrs=dict(first.attrs),
                  name=f"{first.name}_merged", domain=DOMAIN, opset=1,
                  origin=[o for n in nodes for o in n.origin])
    outs = [n.outputs[0] for n in nodes]
    split = Node("SplitChannels", [merged_out], outs, attrs={"sizes": [int(w.shape[0]) for w in ws]},  # type: ignore[union-attr]
                 name=f"{first.name}_split", domain=DOMAIN, opset=1, origin=[])
    pos = min(graph.nodes.index(n) for n in nodes)
    for n in nodes:
        graph.remove_node(n)
    graph.nodes.insert(pos, split)
    graph.nodes.insert(pos, merged)
    for nd in (merged, split):
        for i, v in enumerate(nd.inputs):
            if v is not None:
                v.uses.append((nd, i))
        for v in nd.outputs:
            v.producer = nd
