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


# ---------------------------------------------------------------------------------------------
# elementwise ops that overwrite their first input when it dies there
# before -> after:  y = Relu(t) (t fresh, read only here)  ->  y = tensorkiln::Inplace(t){op=Relu}

_UNARY = {"Relu", "Sigmoid", "Tanh", "Neg", "Exp", "Abs", "Sqrt", "Erf", "Reciprocal", "Ceil", "Floor"}
_BINARY = {"Add", "Sub", "Mul", "Div"}
# producers whose kernels always return a new tensor (never a view of an input)
_FRESH_PRODUCERS = {"FusedConv", "FusedGemm", "Attention", "LayerNorm", "Gelu", "Inplace"}


def run_elementwise(graph: Graph, report: RuleReport) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node.domain != "" or node.op_type not in _UNARY | _BINARY:
            continue
        a = node.inputs[0] if node.inputs else None
        if a is None or a.producer is None:
            continue
        p = a.producer
        if p.domain != "tensorkiln" or p.op_type not in _FRESH_PRODUCERS:
            report.reject(node, f"input {a.name!r} is not a fresh tensor of a fused step")
            continue
        if len(a.uses) != 1 or any(o is a for o in graph.outputs):
            report.reject(node, f"input {a.name!r} is read elsewhere")
            continue
        if node.op_type in _BINARY and (node.inputs[1] is None or node.inputs[1] is a):
            continue
        if a.dtype is not None and not a.dtype.is_float:
            report.reject(node, "not a float tensor")
            continue
        node.attrs = {"op": node.op_type, **{k: v for k, v in node.attrs.items()}}
        node.op_type, node.domain, node.opset = "Inplace", "tensorkiln", 1
        report.fired += 1
        changed = True
    return changed
