"""In-place residual epilogues: a FusedConv adds into its residual input when that tensor dies there.

# before -> after:  y = FusedConv(x, W, b, z)  ->  y = FusedConv(x, W, b, z){residual_inplace} (y aliases z)

Safe when ``z`` is a fresh tensor made by an earlier step (not a view, input, constant or
graph output) and every other reader of ``z`` runs before this step. Saves allocating the
output and a pass over memory per residual block.
"""

from __future__ import annotations

from tensorkiln.ir import Graph
from tensorkiln.passes.rewrite import RuleReport

# ops whose kernels return fresh tensors (never views of their inputs)
_FRESH = {("tensorkiln", "FusedConv"), ("", "Relu"), ("", "Add"), ("", "Conv"), ("", "MaxPool")}


def run(graph: Graph, report: RuleReport) -> bool:
    pos = {id(n): i for i, n in enumerate(graph.nodes)}
    changed = False
    for i, node in enumerate(graph.nodes):
        if node.domain != "tensorkiln" or node.op_type != "FusedConv" or len(node.inputs) < 4:
            continue
        z = node.inputs[3]
        if z is None:
            continue
        p = z.producer
        if p is None or (p.domain, p.op_type) not in _FRESH:
            report.reject(node, f"residual {z.name!r} is not a fresh tensor of an earlier step")
            continue
        if any(o is z for o in graph.outputs):
            report.reject(node, f"residual {z.name!r} is a graph output")
            continue
        others = [u for u, k in z.uses if u is not node or k != 3]
        if any(pos.get(id(u), 1 << 30) >= i for u in others):
            report.reject(node, f"residual {z.name!r} is read after this step")
            continue
        node.attrs["residual_inplace"] = True
        report.fired += 1
        changed = True
    return changed
