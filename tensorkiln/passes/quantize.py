"""Int8 rewrite: the layers a :class:`~tensorkiln.quant.plan.QuantPlan` names become int8 kernels.

# before -> after:  y = FusedConv(x, W, b, z){act}   ->  y = QConv(x, Wq, Ws, b, z){x/y/z scale, zero point}
# before -> after:  y = FusedGemm(x, W, b){act}      ->  y = QGemm(x, Wq, Ws, b){x/y scale, zero point}
# before -> after:  m = MaxPool(a:uint8)             ->  m = QMaxPool(a)
# before -> after:  r = Op(v:uint8)                  ->  r = Op(Dequantize(v))

Weights are quantized per output channel (``quant.qparams.quantize_weight``); activations
per tensor to uint8 from their calibrated ranges. Where tensors stay uint8 between layers
follows ``quant.plan.plan_storage`` — the same rules the calibration simulation uses.
"""

from __future__ import annotations

from typing import Any

from tensorkiln.ir import DType, Graph, Node, Value
from tensorkiln.passes.rewrite import RuleReport
from tensorkiln.quant.plan import QuantPlan, layer_kind, nodes_for, plan_storage
from tensorkiln.quant.qparams import QParams, quantize_weight

DOMAIN = "tensorkiln"


def _params(plan: QuantPlan, v: Value) -> QParams:
    r = plan.ranges.get(v.name)
    if r is None:
        from tensorkiln.errors import InternalError

        raise InternalError(f"no calibrated range for tensor {v.name!r}")
    return QParams.from_range(*r)


def apply(graph: Graph, plan: QuantPlan) -> dict[str, Any]:
    """Rewrite ``graph`` in place; returns a report {"int8": [node names], "uint8_tensors": n}."""
    layers = nodes_for(graph, plan.layers)
    st = plan_storage(graph, layers)
    qp: dict[int, QParams] = {}
    for n in graph.nodes:
        for v in n.outputs:
            if id(v) in st.stored:
                qp[id(v)] = _params(plan, st.param_source[id(v)])
    stored_vals: list[Value] = [v for n in graph.nodes for v in n.outputs if id(v) in st.stored]
    int8_readers: set[tuple[int, int]] = set()
    replaced: dict[int, Node] = {}
    for n in layers:
        new = _quantized_layer(graph, n, plan, st.stored, qp)
        replaced[id(n)] = new
        if layer_kind(n) == "conv":
            int8_readers.update({(id(new), 0), (id(new), 4)})
        else:
            int8_readers.add((id(new), 0))
    for n in list(graph.nodes):
        if id(n) in st.transparent:
            src = n.inputs[0]
            assert src is not None
            attrs = dict(n.attrs)
            p = qp[id(n.outputs[0])]
            attrs.update(x_scale=p.scale, x_zero_point=p.zero_point)
            new = Node("QMaxPool", [src], list(n.outputs), attrs, n.name, DOMAIN, 1, origin=list(n.origin))
            replaced[id(n)] = new
            int8_readers.add((id(new), 0))
    for i, old in enumerate(graph.nodes):
        rep = replaced.get(id(old))
        if rep is None:
            continue
        for k, u in enumerate(old.inputs):
            if u is not None:
                u.uses = [(m, j) for (m, j) in u.uses if not (m is old and j == k)]
        for k, u in enumerate(rep.inputs):
            if u is not None:
                u.uses.append((rep, k))
        for u in rep.outputs:
            u.producer = rep
        graph.nodes[i] = rep
    for v in stored_vals:
        v.dtype = DType.UINT8
        _dequantize_for_float_readers(graph, v, qp[id(v)], int8_readers)
    mark_inplace_residual(graph)
    return {"int8": [n.name for n in layers], "uint8_tensors": len(stored_vals)}


# ops whose kernels always return a new tensor (never a view of an input)
_FRESH = {("tensorkiln", "QConv"), ("tensorkiln", "QMaxPool"), ("tensorkiln", "FusedConv"),
          ("tensorkiln", "Dequantize"), ("tensorkiln", "Quantize"), ("", "Relu"), ("", "Add"), ("", "Conv"),
          ("", "MaxPool")}


def mark_inplace_residual(graph: Graph, report: RuleReport | None = None) -> bool:
    """``QConv{residual_inplace}``: the sum post-op accumulates into the residual itself (no copy)
    when it is a fresh tensor of an earlier step, of the output's type, read by no later step.

    # before -> after:  y = QConv(x, Wq, Ws, b, z)  ->  y = QConv(x, Wq, Ws, b, z){residual_inplace}
    """
    pos = {id(n): i for i, n in enumerate(graph.nodes)}
    changed = False
    for i, node in enumerate(graph.nodes):
        if node.domain != DOMAIN or node.op_type != "QConv" or len(node.inputs) < 5 or node.inputs[4] is None:
            continue
        z = node.inputs[4]
        node.attrs.pop("residual_inplace", None)
        p = z.producer
        same_type = (z.dtype == DType.UINT8) == (node.attrs.get("out_dtype") == "uint8")
        others = [u for u, k in z.uses if u is not node or k != 4]
        why = ("residual is converted first" if not same_type else
               f"residual {z.name!r} is not a fresh tensor of an earlier step"
               if p is None or (p.domain, p.op_type) not in _FRESH else
               f"residual {z.name!r} is a graph output" if any(o is z for o in graph.outputs) else
               f"residual {z.name!r} is read after this step"
               if any(pos.get(id(u), 1 << 30) >= i for u in others) else None)
        if why is not None:
            if report is not None:
                report.reject(node, why)
            continue
        node.attrs["residual_inplace"] = True
        changed = True
        if report is not None:
            report.fired += 1
    return changed


def run_inplace(graph: Graph, report: RuleReport) -> bool:
    """Pipeline entry: in-place residual sums for the int8 convolutions of explicitly quantized models."""
    return mark_inplace_residual(graph, report)


def apply_dynamic(graph: Graph, layers: list[Node]) -> list[str]:
    """FusedGemm → DynQGemm (int8 weights, activations quantized per call); returns the names.

    # before -> after:  y = FusedGemm(x, W, b){act}  ->  y = DynQGemm(x, Wq, Ws, b){act}
    """
    done: list[str] = []
    for n in layers:
        if n.domain != DOMAIN or n.op_type != "FusedGemm" or n not in graph.nodes:
            continue
        w = n.inputs[1]
        assert w is not None and w.const is not None
        q, s = quantize_weight(w.const)
        qv = graph.add_constant(graph.fresh_name(f"{n.name}_Wq"), q)
        sv = graph.add_constant(graph.fresh_name(f"{n.name}_Ws"), s)
        b = n.inputs[2] if len(n.inputs) > 2 else None
        new = Node("DynQGemm", [n.inputs[0], qv, sv, b], list(n.outputs), dict(n.attrs), n.name, DOMAIN, 1,
                   origin=list(n.origin))
        i = graph.nodes.index(n)
        graph.remove_node(n)
        graph.nodes.insert(i, new)
        for k, v in enumerate(new.inputs):
            if v is not None:
                v.uses.append((new, k))
        for v in new.outputs:
            v.producer = new
        done.append(n.name)
    return done


def stored_params(graph: Graph, plan: QuantPlan, layers: list[Node]) -> tuple[Any, dict[int, QParams]]:
    """(storage plan, scale/zero point of every stored uint8 value) for these int8 layers."""
    st = plan_storage(graph, layers)
    qp = {id(v): _params(plan, st.param_source[id(v)]) for n in graph.nodes for v in n.outputs if id(v) in st.stored}
    return st, qp


def int8_node(n: Node, plan: QuantPlan, stored: set[int], qp: dict[int, QParams]) -> Node:
    """The int8 node for layer ``n`` on its own (weights as free-standing constants): what
    ``apply`` puts in the graph, for timing it against the float layer."""
    return _quantized_layer(None, n, plan, stored, qp)


def _quantized_layer(graph: Graph | None, n: Node, plan: QuantPlan, stored: set[int],
                     qp: dict[int, QParams]) -> Node:
    kind = layer_kind(n)
    x, w = n.inputs[0], n.inputs[1]
    assert x is not None and w is not None and w.const is not None
    q, s = quantize_weight(w.const)
    if graph is None:
        qv, sv = Value(f"{n.name}_Wq", const=q), Value(f"{n.name}_Ws", const=s)
    else:
        qv = graph.add_constant(graph.fresh_name(f"{n.name}_Wq"), q)
        sv = graph.add_constant(graph.fresh_name(f"{n.name}_Ws"), s)
    b = n.inputs[2] if len(n.inputs) > 2 else None
    attrs: dict[str, Any] = dict(n.attrs)
    xp = qp.get(id(x)) or _params(plan, x)
    attrs.update(x_scale=xp.scale, x_zero_point=xp.zero_point)
    y = n.outputs[0]
    if id(y) in stored:
        yp = qp[id(y)]
        attrs.update(out_dtype="uint8", y_scale=yp.scale, y_zero_point=yp.zero_point)
    else:
        attrs["out_dtype"] = "float32"
    inputs: list[Value | None] = [x, qv, sv, b]
    if kind == "conv":
        z = n.inputs[3] if len(n.inputs) > 3 else None
        if z is not None:
            zp = qp.get(id(z)) or _params(plan, z)
            attrs.update(z_scale=zp.scale, z_zero_point=zp.zero_point)
        inputs.append(z)
        attrs.setdefault("layout", "nhwc")
    op = "QConv" if kind == "conv" else "QGemm"
    return Node(op, inputs, [y], attrs, n.name, DOMAIN, 1, origin=list(n.origin))


def _dequantize_for_float_readers(graph: Graph, v: Value, p: QParams, int8_readers: set[tuple[int, int]]) -> None:
    float_uses = [(m, j) for (m, j) in v.uses if (id(m), j) not in int8_readers]
    is_output = any(o is v for o in graph.outputs)
    if not float_uses and not is_output:
        return
    fv = Value(graph.fresh_name(f"{v.name}_fp32"), DType.FLOAT32, v.shape)
    dq = Node("Dequantize", [v], [fv], {"x_scale": p.scale, "x_zero_point": p.zero_point},
              graph.fresh_name(f"{v.name}_dequantize"), DOMAIN, 1, origin=[])
    pos = graph.nodes.index(v.producer) + 1 if v.producer is not None else 0
    graph.nodes.insert(pos, dq)
    fv.producer = dq
    for m, j in float_uses:
        m.inputs[j] = fv
        fv.uses.append((m, j))
    v.uses = [(m, j) for (m, j) in v.uses if (id(m), j) in int8_readers]
    v.uses.append((dq, 0))
    if is_output:  # keep the graph output's name on the float tensor
        graph.outputs = [fv if o is v else o for o in graph.outputs]
        v.name, fv.name = fv.name, v.name
