"""Transformer fusions: GELU (erf and tanh forms), decomposed LayerNorm, softmax attention.

# before -> after:  x*0.5*(1+Erf(x/√2))                        ->  tensorkiln::Gelu(x)
# before -> after:  0.5*x*(1+Tanh(√(2/π)*(x+0.044715*x³)))     ->  tensorkiln::Gelu(x){approximate=tanh}
# before -> after:  (x-mean(x))/Sqrt(mean((x-mean(x))²)+ε)*γ+β  ->  tensorkiln::LayerNorm(x, γ, β)
# before -> after:  MatMul(Softmax(MatMul(q,kᵀ)*s + mask), v)   ->  tensorkiln::Attention(q, kᵀ, v, mask){scale=s}
"""

from __future__ import annotations

import math

from tensorkiln.ir import Graph, Node, Value
from tensorkiln.passes.match import close, is_op, only_reader, other_input, scalar, splice
from tensorkiln.passes.rewrite import RuleReport

DOMAIN = "tensorkiln"


def _new(op: str, inputs: list[Value | None], out: Value, absorbed: list[Node], **attrs: object) -> Node:
    return Node(op_type=op, inputs=inputs, outputs=[out], attrs=dict(attrs), name=absorbed[0].name,
                domain=DOMAIN, opset=1, origin=[o for n in absorbed for o in n.origin])


# ----------------------------------------------------------------------------- GELU (erf)
def _gelu_erf(graph: Graph, erf: Node) -> tuple[Value, list[Node], Value] | str:
    d = erf.inputs[0].producer if erf.inputs[0] is not None else None
    if not is_op(d, "Div", "Mul"):
        return "Erf input is not x/√2"
    assert d is not None
    x = d.inputs[0]
    c = scalar(d.inputs[1])
    if not ((d.op_type == "Div" and close(c, math.sqrt(2))) or (d.op_type == "Mul" and close(c, 1 / math.sqrt(2)))):
        return "Erf input is not x/√2"
    add = only_reader(graph, erf.outputs[0])
    if not is_op(add, "Add") or not close(scalar(other_input(add, erf.outputs[0])), 1.0):  # type: ignore[arg-type]
        return "Erf is not followed by +1"
    assert add is not None and x is not None
    m1 = only_reader(graph, add.outputs[0])
    if not is_op(m1, "Mul"):
        return "1+Erf is not multiplied"
    assert m1 is not None
    other = other_input(m1, add.outputs[0])
    if other is x:  # x*(1+erf) then *0.5
        m2 = only_reader(graph, m1.outputs[0])
        if not is_op(m2, "Mul") or not close(scalar(other_input(m2, m1.outputs[0])), 0.5):  # type: ignore[arg-type]
            return "x*(1+Erf) is not multiplied by 0.5"
        assert m2 is not None
        return x, [d, erf, add, m1, m2], m2.outputs[0]
    if close(scalar(other), 0.5):  # (1+erf)*0.5 then *x
        m2 = only_reader(graph, m1.outputs[0])
        if not is_op(m2, "Mul") or other_input(m2, m1.outputs[0]) is not x:  # type: ignore[arg-type]
            return "0.5*(1+Erf) is not multiplied by x"
        assert m2 is not None
        return x, [d, erf, add, m1, m2], m2.outputs[0]
    if other is not None and is_op(other.producer, "Mul"):  # (x*0.5)*(1+erf)
        h = other.producer
        assert h is not None
        if other_input(h, x) is not None and close(scalar(other_input(h, x)), 0.5) and only_reader(graph, other):
            return x, [d, erf, add, h, m1], m1.outputs[0]
    return "Erf chain does not compute x·½·(1+erf(x/√2))"


def fuse_gelu(graph: Graph, report: RuleReport) -> bool:
    changed = False
    for erf in list(graph.nodes):
        if erf not in graph.nodes or not is_op(erf, "Erf"):
            continue
        m = _gelu_erf(graph, erf)
        if isinstance(m, str):
            report.reject(erf, m)
            continue
        x, absorbed, out = m
        # the Div reading x must have only the Erf as reader
        if only_reader(graph, absorbed[0].outputs[0]) is not erf:
            report.reject(erf, "x/√2 has other readers")
            continue
        splice(graph, absorbed, _new("Gelu", [x], out, absorbed, approximate="none"))
        report.fired += 1
        changed = True
    return changed


# ------------------------------------------------------------------------------ LayerNorm
def _reduce_axes(node: Node) -> list[int] | None:
    if node.opset >= 18 and len(node.inputs) > 1 and node.inputs[1] is not None:
        v = node.inputs[1].const
        return None if v is None else [int(a) for a in v.reshape(-1)]
    ax = node.attrs.get("axes")
    return None if ax is None else [int(a) for a in ax]


def _last_axis(node: Node, x: Value) -> bool:
    ax = _reduce_axes(node)
    rank = len(x.shape) if x.shape is not None else None
    return ax is not None and len(ax) == 1 and (ax[0] == -1 or (rank is not None and ax[0] == rank - 1)) \
        and int(node.attrs.get("keepdims", 1)) == 1


def _layernorm(graph: Graph, mean1: Node) -> tuple[list[Node], Value, Value | None, Value | None, float, Value] | str:
    x = mean1.inputs[0]
    if x is None or not _last_axis(mean1, x):
        return "ReduceMean is not over the last axis with keepdims"
    subs = [n for n, _ in mean1.outputs[0].uses]
    if len(subs) != 1 or not is_op(subs[0], "Sub") or subs[0].inputs[0] is not x:
        return "ReduceMean is not followed by x - mean"
    sub = subs[0]
    d = sub.outputs[0]
    readers_d = [n for n, _ in d.uses]
    pw = next((n for n in readers_d if is_op(n, "Pow") and close(scalar(n.inputs[1]), 2.0)), None)
    if pw is None:
        pw = next((n for n in readers_d if is_op(n, "Mul") and n.inputs[0] is d and n.inputs[1] is d), None)
    div = next((n for n in readers_d if is_op(n, "Div") and n.inputs[0] is d), None)
    if pw is None or div is None or len(readers_d) != 2:
        return "x - mean is not both squared and divided"
    mean2 = only_reader(graph, pw.outputs[0])
    if not is_op(mean2, "ReduceMean") or not _last_axis(mean2, d):  # type: ignore[arg-type]
        return "variance is not a ReduceMean over the last axis"
    assert mean2 is not None
    add = only_reader(graph, mean2.outputs[0])
    eps = scalar(other_input(add, mean2.outputs[0])) if is_op(add, "Add") else None  # type: ignore[arg-type]
    if add is None or eps is None:
        return "variance is not followed by + ε"
    sq = only_reader(graph, add.outputs[0])
    if not is_op(sq, "Sqrt") or only_reader(graph, sq.outputs[0]) is not div or div.inputs[1] is not sq.outputs[0]:  # type: ignore[union-attr]
        return "√(var+ε) does not divide x - mean"
    assert sq is not None
    absorbed = [mean1, sub, pw, mean2, add, sq, div]
    out = div.outputs[0]
    gamma = beta = None
    mul = only_reader(graph, out)
    if is_op(mul, "Mul") and other_input(mul, out) is not None and other_input(mul, out).is_const:  # type: ignore[arg-type, union-attr]
        assert mul is not None
        gamma = other_input(mul, out)
        absorbed.append(mul)
        out = mul.outputs[0]
        add2 = only_reader(graph, out)
        if is_op(add2, "Add") and other_input(add2, out) is not None and other_input(add2, out).is_const:  # type: ignore[arg-type, union-attr]
            assert add2 is not None
            beta = other_input(add2, out)
            absorbed.append(add2)
            out = add2.outputs[0]
    return absorbed, x, gamma, beta, float(eps), out


def fuse_layernorm(graph: Graph, report: RuleReport) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node not in graph.nodes or not is_op(node, "ReduceMean"):
            continue
        m = _layernorm(graph, node)
        if isinstance(m, str):
            report.reject(node, m)
            continue
        absorbed, x, gamma, beta, eps, out = m
        splice(graph, absorbed, _new("LayerNorm", [x, gamma, beta], out, absorbed, epsilon=eps))
        report.fired += 1
        changed = True
    return changed


# ------------------------------------------------------------------------------ Attention
def _attention(graph: Graph, sm: Node) -> tuple[list[Node], Value, Value, Value, Value | None, float, Value] | str:
    axis = int(sm.attrs.get("axis", -1 if sm.opset >= 13 else 1))
    x = sm.inputs[0]
    rank = len(x.shape) if x is not None and x.shape is not None else None
    if rank is not None and not (axis == -1 or axis == rank - 1):
        return "Softmax is not over the last axis"
    if rank is None and axis < 2:
        return "Softmax axis is not the last one of a rank >= 3 tensor"
    # with the rank unknown the kernel checks the axis at run time and falls back exactly
    pv = only_reader(graph, sm.outputs[0])
    if not is_op(pv, "MatMul") or pv.inputs[0] is not sm.outputs[0]:  # type: ignore[union-attr]
        return "Softmax output is not the left operand of a MatMul"
    assert pv is not None and x is not None
    absorbed = [sm, pv]
    mask: Value | None = None
    cur = x
    p = cur.producer
    if is_op(p, "Add"):
        assert p is not None
        a, b = p.inputs[0], p.inputs[1]
        if a is not None and is_op(a.producer, "MatMul", "Div", "Mul") and only_reader(graph, a) is p:
            cur, mask = a, b
        elif b is not None and is_op(b.producer, "MatMul", "Div", "Mul") and only_reader(graph, b) is p:
            cur, mask = b, a
        else:
            return "Softmax input is an Add without a score operand"
        absorbed.append(p)
        p = cur.producer
    scale = 1.0
    if is_op(p, "Div", "Mul"):
        assert p is not None
        s = scalar(p.inputs[1])
        if s is None or only_reader(graph, cur) is None:
            return "scores are scaled by a non-constant"
        scale = 1.0 / s if p.op_type == "Div" else s
        absorbed.append(p)
        cur = p.inputs[0]  # type: ignore[assignment]
        p = cur.producer
    if not is_op(p, "MatMul") or only_reader(graph, cur) is None:
        return "scores are not a MatMul"
    assert p is not None
    absorbed.append(p)
    q, kt, v = p.inputs[0], p.inputs[1], pv.inputs[1]
    if q is None or kt is None or v is None:
        return "missing operand"
    for t in (q, kt, v):
        if t.shape is not None and len(t.shape) < 3:
            return f"operand {t.name!r} has rank < 3"
    return absorbed, q, kt, v, mask, scale, pv.outputs[0]


def fuse_attention(graph: Graph, report: RuleReport) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node not in graph.nodes or not is_op(node, "Softmax"):
            continue
        m = _attention(graph, node)
        if isinstance(m, str):
            report.reject(node, m)
            continue
        absorbed, q, kt, v, mask, scale, out = m
        sm = absorbed[0]
        axis = int(sm.attrs.get("axis", -1 if sm.opset >= 13 else 1))
        splice(graph, absorbed, _new("Attention", [q, kt, v, mask], out, absorbed, scale=scale,
                                     softmax_axis=axis, softmax_opset=sm.opset))
        report.fired += 1
        changed = True
    return changed
