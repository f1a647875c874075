"""Explicit quantization (QDQ and QOperator models, e.g. onnxruntime's ``quantize_static``) → int8 kernels.

# before -> after:  y = Q(Relu?(Conv(DQ(xq), DQ(wq), DQ(bq))))        ->  y = QConv(xq, wq, ws, b){relu?}
# before -> after:  y = Q(Relu?(Add(DQ(QConv(…)), DQ(zq))))             ->  y = QConv(…, z=zq){relu?}
# before -> after:  y = Q(Relu?(Gemm|MatMul(DQ(xq), DQ(wq), DQ(bq)?)))  ->  y = QGemm(xq, wq, ws, b){relu?}
# before -> after:  y = Q(MaxPool(DQ(xq)))  (same scale, zero point)    ->  y = QMaxPool(xq)
# before -> after:  y = Q(GlobalAveragePool(DQ(xq)))  (or no Q: float)  ->  y = QGlobalAveragePool(xq)
# before -> after:  y = Q(Flatten|Reshape|Squeeze|Unsqueeze(DQ(xq), …)) (same scale, zero point)
#                                                                        ->  y = Flatten|…(xq, …)
# before -> after:  y = Q(x) / DQ(q)  (per tensor, uint8, left over)   ->  y = Quantize(x) / Dequantize(q)

Runs before constant folding (which would turn the weights' DequantizeLinear into float
constants). The model's scales and zero points are used as written: activations uint8 per
tensor, weights int8 symmetric per output channel or per tensor, bias int32 (or float).
What does not match these patterns keeps its QuantizeLinear / DequantizeLinear nodes and
runs exactly as written in float.

Two roundings differ from the model, each by at most one step: a residual Add is fused into
the convolution (oneDNN's ``sum`` post-op), so the convolution's own output is not rounded
before the sum; and on CPUs without VNNI weights wider than 7 bits are re-rounded to 7 bits
per channel (``quant.qparams``: 8-bit weights would saturate int16 pair sums there).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tensorkiln.ir import DType, Graph, Node, Value
from tensorkiln.passes.match import only_reader
from tensorkiln.passes.rewrite import RuleReport
from tensorkiln.quant.plan import is_transparent
from tensorkiln.quant.qparams import exact_weight_limit, weight_qmax

DOMAIN = "tensorkiln"


def _const(v: Value | None) -> np.ndarray | None:
    return None if v is None else v.const


def act_params(dq_or_q: Node) -> tuple[float, int] | str:
    """(scale, zero point) of a per-tensor uint8 Q/DQ node with constant parameters, or why not."""
    s = _const(dq_or_q.inputs[1] if len(dq_or_q.inputs) > 1 else None)
    z_v = dq_or_q.inputs[2] if len(dq_or_q.inputs) > 2 else None
    if s is None or s.size != 1:
        return "scale is not a constant scalar"
    if z_v is None:
        return "no zero point (int8 activations are not fused)"
    z = _const(z_v)
    if z is None or z.size != 1:
        return "zero point is not a constant scalar"
    if z.dtype != np.uint8:
        return f"activations are {z.dtype}; the int8 kernels take uint8 activations"
    return float(s.reshape(-1)[0]), int(z.reshape(-1)[0])


def _producer(v: Value | None, op: str) -> Node | None:
    if v is None or v.producer is None:
        return None
    p = v.producer
    return p if p.domain == "" and p.op_type == op else None


def _weight(dq: Node | None, k_axis: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(int8 weights, float32 scales per output channel) from a weight DequantizeLinear."""
    if dq is None:
        return "weight is not dequantized from a constant"
    q, s = _const(dq.inputs[0]), _const(dq.inputs[1])
    z = _const(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    if q is None or s is None:
        return "weight or its scale is not a constant"
    if q.dtype != np.int8:
        return f"weights are {q.dtype}; the int8 kernels take int8 weights"
    if z is not None and np.any(z != 0):
        return "weight zero point is not 0"
    if int(dq.attrs.get("block_size", 0)):
        return "blocked weight quantization"
    k = q.shape[k_axis]
    if s.size == 1:
        scales = np.full(k, float(s.reshape(-1)[0]), np.float32)
    else:
        axis = int(dq.attrs.get("axis", 1))
        axis = axis + q.ndim if axis < 0 else axis
        if axis != k_axis or s.size != k:
            return f"weights are quantized along axis {axis}, not per output channel"
        scales = s.astype(np.float32).reshape(-1)
    return q, scales


def _narrow(q: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Weights re-rounded to this CPU's exact range (see module doc); True when changed."""
    qmax = weight_qmax()
    m = np.abs(q.reshape(q.shape[0], -1).astype(np.int32)).max(axis=1)
    wide = m > exact_weight_limit()
    if not wide.any():
        return q, s, False
    f = np.where(wide, m / qmax, 1.0)
    q2 = np.clip(np.round(q / f.reshape((-1,) + (1,) * (q.ndim - 1))), -qmax, qmax).astype(np.int8)
    q2 = np.where(wide.reshape((-1,) + (1,) * (q.ndim - 1)), q2, q)
    return q2, (s * f).astype(np.float32), True


def _bias(v: Value | None, n_out: int) -> np.ndarray | str | None:
    if v is None:
        return None
    if v.const is not None:
        return np.broadcast_to(v.const.astype(np.float32).reshape(-1), (n_out,)).copy()
    dq = _producer(v, "DequantizeLinear")
    if dq is None:
        return "bias is neither constant nor dequantized from a constant"
    q, s = _const(dq.inputs[0]), _const(dq.inputs[1])
    z = _const(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    if q is None or s is None:
        return "bias is not dequantized from a constant"
    zz = 0 if z is None else z.astype(np.float64)
    return ((q.astype(np.float64) - zz) * s.astype(np.float64)).astype(np.float32).reshape(-1)


def _output_chain(graph: Graph, y: Value, acts: tuple[str, ...] = ("Relu",)) -> tuple[str, Node | None, Value]:
    """After the layer: an optional activation, then an optional QuantizeLinear (its node)."""
    act = ""
    nxt = only_reader(graph, y)
    if nxt is not None and nxt.domain == "" and nxt.op_type in acts:
        act = nxt.op_type
        y = nxt.outputs[0]
        nxt = only_reader(graph, y)
    if nxt is not None and nxt.domain == "" and nxt.op_type == "QuantizeLinear" and \
            not isinstance(act_params(nxt), str):
        return act, nxt, nxt.outputs[0]
    return act, None, y


def _new_node(graph: Graph, op: str, inputs: list[Value | None], out: Value, attrs: dict[str, Any],
              absorbed: list[Node]) -> Node:
    node = Node(op, inputs, [out], attrs, absorbed[0].name, DOMAIN, 1,
                origin=[o for n in absorbed for o in (n.origin or [n.name])])
    pos = graph.nodes.index(absorbed[-1])
    graph.nodes.insert(pos + 1, node)
    for n in absorbed:
        graph.remove_node(n)
    for i, v in enumerate(inputs):
        if v is not None:
            v.uses.append((node, i))
    out.producer = node
    return node


def _q_attrs(xp: tuple[float, int], qy: Node | None, out: Value) -> dict[str, Any]:
    a: dict[str, Any] = {"x_scale": xp[0], "x_zero_point": xp[1]}
    if qy is not None:
        yp = act_params(qy)
        assert not isinstance(yp, str)
        a.update(out_dtype="uint8", y_scale=yp[0], y_zero_point=yp[1])
        out.dtype = DType.UINT8
    else:
        a["out_dtype"] = "float32"
    return a


def _layer(graph: Graph, node: Node, report: RuleReport, narrowed: list[str]) -> bool:
    is_conv = node.op_type == "Conv"
    dx = _producer(node.inputs[0], "DequantizeLinear")
    if dx is None:
        report.reject(node, "input is not dequantized")
        return False
    xp = act_params(dx)
    if isinstance(xp, str):
        report.reject(node, f"input: {xp}")
        return False
    wdq = _producer(node.inputs[1], "DequantizeLinear")
    if is_conv:
        if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
            report.reject(node, "auto_pad SAME")
            return False
        w = _weight(wdq, 0)
        if not isinstance(w, str) and w[0].ndim != 4:
            w = "not a 2-D convolution"
    else:
        trans_b = node.op_type == "Gemm" and int(node.attrs.get("transB", 0))
        if node.op_type == "Gemm" and (int(node.attrs.get("transA", 0)) or float(node.attrs.get("beta", 1.0)) != 1.0):
            report.reject(node, "Gemm with transA or beta != 1")
            return False
        w = _weight(wdq, 0 if trans_b else 1)
        if not isinstance(w, str):
            if w[0].ndim != 2:
                w = "weight is not 2-D"
            else:
                alpha = float(node.attrs.get("alpha", 1.0)) if node.op_type == "Gemm" else 1.0
                w = (np.ascontiguousarray(w[0] if trans_b else w[0].T), w[1] * np.float32(alpha))
    if isinstance(w, str):
        report.reject(node, w)
        return False
    q, s = w
    b = _bias(node.inputs[2] if len(node.inputs) > 2 else None, q.shape[0])
    if isinstance(b, str):
        report.reject(node, b)
        return False
    q, s, changed = _narrow(q, s)
    if changed:
        narrowed.append(node.name)
    act, qy, out = _output_chain(graph, node.outputs[0])
    absorbed = [node]
    if act:
        absorbed.append(node.outputs[0].uses[0][0])
    if qy is not None:
        absorbed.append(qy)
    attrs = {k: v for k, v in node.attrs.items() if k in ("strides", "pads", "dilations", "group", "auto_pad")} \
        if is_conv else {}
    attrs.update(activation=act, activation_params=[], **_q_attrs(xp, qy, out))
    if is_conv:
        attrs["layout"] = "nhwc"
    qv = graph.add_constant(graph.fresh_name(f"{node.name}_Wq"), q)
    sv = graph.add_constant(graph.fresh_name(f"{node.name}_Ws"), s)
    bv = graph.add_constant(graph.fresh_name(f"{node.name}_B"), b) if b is not None else None
    xq = dx.inputs[0]
    inputs: list[Value | None] = [xq, qv, sv, bv] + ([None] if is_conv else [])
    _new_node(graph, "QConv" if is_conv else "QGemm", inputs, out, attrs, absorbed)
    return True


def _fuse_add(graph: Graph, add: Node, report: RuleReport) -> bool:
    """Add(DQ(QConv output), DQ(z)) [→ Relu] → Q  into the QConv's sum post-op."""
    for side in (0, 1):
        a, b = add.inputs[side], add.inputs[1 - side]
        da, db = _producer(a, "DequantizeLinear"), _producer(b, "DequantizeLinear")
        if da is None or db is None or a is None:
            continue
        conv = da.inputs[0].producer if da.inputs[0] is not None else None
        if conv is None or conv.domain != DOMAIN or conv.op_type != "QConv" or conv.inputs[4] is not None:
            continue
        if conv.attrs.get("activation") or conv.attrs.get("out_dtype") != "uint8":
            continue
        if only_reader(graph, conv.outputs[0]) is not da or only_reader(graph, a) is not add:
            continue
        zp = act_params(db)
        if isinstance(zp, str) or tuple(a.shape or ()) != tuple(b.shape or ()) or a.shape is None:  # type: ignore[union-attr]
            continue
        act, qy, out = _output_chain(graph, add.outputs[0])
        if qy is None:
            report.reject(add, "residual Add is not requantized")
            return False
        absorbed = [da, add] + ([add.outputs[0].uses[0][0]] if act else []) + [qy]
        attrs = dict(conv.attrs)
        attrs.update(activation=act, z_scale=zp[0], z_zero_point=zp[1], **_q_attrs(
            (conv.attrs["x_scale"], conv.attrs["x_zero_point"]), qy, out))
        _replace_conv(graph, conv, [*conv.inputs[:4], db.inputs[0]], out, attrs, absorbed)
        return True
    report.reject(add, "not a residual Add of a quantized convolution")
    return False


def _replace_conv(graph: Graph, conv: Node, inputs: list[Value | None], out: Value, attrs: dict[str, Any],
                  absorbed: list[Node]) -> None:
    node = Node("QConv", inputs, [out], attrs, conv.name, DOMAIN, 1,
                origin=list(conv.origin) + [o for n in absorbed for o in (n.origin or [n.name])])
    pos = max(graph.nodes.index(n) for n in absorbed)
    graph.nodes.insert(pos + 1, node)
    for n in [conv, *absorbed]:
        graph.remove_node(n)
    for i, v in enumerate(inputs):
        if v is not None:
            v.uses.append((node, i))
    out.producer = node


def _maxpool(graph: Graph, pool: Node, report: RuleReport) -> bool:
    dx = _producer(pool.inputs[0], "DequantizeLinear")
    qy = only_reader(graph, pool.outputs[0])
    if dx is None or qy is None or qy.op_type != "QuantizeLinear" or qy.domain != "" or not is_transparent(pool):
        return False
    xp, yp = act_params(dx), act_params(qy)
    if isinstance(xp, str) or xp != yp:
        report.reject(pool, "MaxPool is not between a DQ and a Q with the same scale and zero point")
        return False
    out = qy.outputs[0]
    attrs = {k: v for k, v in pool.attrs.items()}
    attrs.update(x_scale=xp[0], x_zero_point=xp[1])
    _new_node(graph, "QMaxPool", [dx.inputs[0]], out, attrs, [pool, qy])
    return True


def _gap(graph: Graph, pool: Node) -> bool:
    dx = _producer(pool.inputs[0], "DequantizeLinear")
    if dx is None or isinstance(xp := act_params(dx), str) or len(pool.outputs) != 1:
        return False
    qy = only_reader(graph, pool.outputs[0])
    if qy is not None and (qy.domain != "" or qy.op_type != "QuantizeLinear" or isinstance(act_params(qy), str)):
        qy = None
    out = qy.outputs[0] if qy is not None else pool.outputs[0]
    _new_node(graph, "QGlobalAveragePool", [dx.inputs[0]], out, _q_attrs(xp, qy, out), [pool] + ([qy] if qy else []))
    return True


RESHAPES = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")


def _reshape_codes(graph: Graph, node: Node) -> bool:
    """A reshape between a DQ and a Q of the same scale and zero point moves the codes as they are."""
    dx = _producer(node.inputs[0], "DequantizeLinear")
    qy = only_reader(graph, node.outputs[0]) if len(node.outputs) == 1 else None
    if dx is None or qy is None or qy.domain != "" or qy.op_type != "QuantizeLinear":
        return False
    xp = act_params(dx)
    if isinstance(xp, str) or xp != act_params(qy) or dx.inputs[0] is None:
        return False
    new = Node(node.op_type, [dx.inputs[0], *node.inputs[1:]], list(qy.outputs), dict(node.attrs), node.name, "",
               node.opset, origin=[o for n in (node, qy) for o in (n.origin or [n.name])])
    graph.remove_node(qy)
    _replace(graph, node, new)
    return True


# ------------------------------------------------------------------ QOperator format
# before -> after:  y = QLinearConv(xq, xs, xz, wq, ws, 0, ys, yz, bq)           ->  y = QConv(xq, wq, ws, b)
# before -> after:  y = QLinearMatMul(aq, …, wq, …) / com.microsoft QGemm(aq, …)   ->  y = QGemm(aq, wq, ws, b)
# before -> after:  y = com.microsoft QLinearAdd(QConv(…), zq)                     ->  y = QConv(…, z=zq)
# before -> after:  y = MaxPool(q:uint8)                                          ->  y = QMaxPool(q)


def _scalar_q(node: Node, si: int, zi: int) -> tuple[float, int] | str:
    s = _const(node.inputs[si]) if si < len(node.inputs) else None
    z = _const(node.inputs[zi]) if zi < len(node.inputs) else None
    if s is None or s.size != 1 or z is None or z.size != 1:
        return "scale / zero point are not constant scalars"
    if z.dtype != np.uint8:
        return f"activations are {z.dtype}; the int8 kernels take uint8 activations"
    return float(s.reshape(-1)[0]), int(z.reshape(-1)[0])


def _const_weight(v: Value | None, s: Value | None, z: Value | None,
                  k_axis: int) -> tuple[np.ndarray, np.ndarray] | str:
    q, sc = _const(v), _const(s)
    zc = _const(z) if z is not None else None
    if q is None or sc is None:
        return "weight or its scale is not a constant"
    if q.dtype != np.int8:
        return f"weights are {q.dtype}; the int8 kernels take int8 weights"
    if zc is not None and np.any(zc != 0):
        return "weight zero point is not 0"
    k = q.shape[k_axis]
    if sc.size not in (1, k):
        return "weight scales are neither per tensor nor per output channel"
    return q, np.broadcast_to(sc.astype(np.float32).reshape(-1), (k,)).copy()


def _replace(graph: Graph, old: Node, new: Node) -> None:
    i = graph.nodes.index(old)
    graph.remove_node(old)
    graph.nodes.insert(i, new)
    for k, v in enumerate(new.inputs):
        if v is not None:
            v.uses.append((new, k))
    for v in new.outputs:
        v.producer = new


def _qop_layer(graph: Graph, node: Node, report: RuleReport, narrowed: list[str]) -> bool:
    op = node.qualified_op
    if op == "QLinearConv":
        xi, wi, yi, bi, kaxis = (1, 2), 3, (6, 7), 8, 0
    elif op == "QLinearMatMul":
        xi, wi, yi, bi, kaxis = (1, 2), 3, (6, 7), -1, 1
    else:  # com.microsoft::QGemm
        if int(node.attrs.get("transA", 0)):
            report.reject(node, "QGemm with transA")
            return False
        kaxis = 0 if int(node.attrs.get("transB", 0)) else 1
        xi, wi, yi, bi = (1, 2), 3, (7, 8), 6
    xp = _scalar_q(node, *xi)
    has_y = yi[0] < len(node.inputs) and node.inputs[yi[0]] is not None
    yp = _scalar_q(node, *yi) if has_y else None
    w = _const_weight(node.inputs[wi], node.inputs[wi + 1], node.inputs[wi + 2] if wi + 2 < len(node.inputs)
                      else None, kaxis)
    why = xp if isinstance(xp, str) else yp if isinstance(yp, str) else w if isinstance(w, str) else None
    if op == "QLinearConv" and node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
        why = "auto_pad SAME"
    if why is not None:
        report.reject(node, why)
        return False
    assert not isinstance(xp, str) and not isinstance(w, str) and not isinstance(yp, str)
    q, scales = w
    if op == "QLinearConv" and q.ndim != 4:
        report.reject(node, "not a 2-D convolution")
        return False
    if op != "QLinearConv":
        if q.ndim != 2:
            report.reject(node, "weight is not 2-D")
            return False
        q = np.ascontiguousarray(q if kaxis == 0 else q.T)
        scales = scales * np.float32(float(node.attrs.get("alpha", 1.0)) if op != "QLinearMatMul" else 1.0)
    bias = None
    if 0 <= bi < len(node.inputs) and node.inputs[bi] is not None:
        bq = _const(node.inputs[bi])
        if bq is None:
            report.reject(node, "bias is not a constant")
            return False
        bias = (bq.astype(np.float64).reshape(-1) * xp[0] * scales.astype(np.float64)).astype(np.float32)
    q, scales, changed = _narrow(q, scales)
    if changed:
        narrowed.append(node.name)
    out = node.outputs[0]
    attrs: dict[str, Any] = {"activation": "", "activation_params": [], "x_scale": xp[0], "x_zero_point": xp[1]}
    if yp is not None:
        attrs.update(out_dtype="uint8", y_scale=yp[0], y_zero_point=yp[1])
    else:
        attrs["out_dtype"] = "float32"
    if op == "QLinearConv":
        attrs.update({k: v for k, v in node.attrs.items() if k in ("strides", "pads", "dilations", "group",
                                                                      "auto_pad")}, layout="nhwc")
    qv = graph.add_constant(graph.fresh_name(f"{node.name}_Wq"), q)
    sv = graph.add_constant(graph.fresh_name(f"{node.name}_Ws"), scales)
    bv = graph.add_constant(graph.fresh_name(f"{node.name}_B"), bias) if bias is not None else None
    is_conv = op == "QLinearConv"
    new = Node("QConv" if is_conv else "QGemm", [node.inputs[0], qv, sv, bv] + ([None] if is_conv else []),
               [out], attrs, node.name, DOMAIN, 1, origin=list(node.origin))
    _replace(graph, node, new)
    return True


def _qop_add(graph: Graph, add: Node) -> bool:
    """com.microsoft QLinearAdd(a, as, az, b, bs, bz, ys, yz) of a QConv's sole output → its sum post-op."""
    for side, other in ((0, 3), (3, 0)):
        a = add.inputs[side]
        conv = a.producer if a is not None else None
        if a is None or conv is None or conv.domain != DOMAIN or conv.op_type != "QConv" or conv.inputs[4] is not None:
            continue
        if conv.attrs.get("activation") or conv.attrs.get("out_dtype") != "uint8" or only_reader(graph, a) is not add:
            continue
        zp, yp = _scalar_q(add, other + 1, other + 2), _scalar_q(add, 6, 7)
        b = add.inputs[other]
        if isinstance(zp, str) or isinstance(yp, str) or b is None or a is None or a.shape is None or \
                tuple(a.shape) != tuple(b.shape or ()):
            continue
        attrs = dict(conv.attrs)
        attrs.update(z_scale=zp[0], z_zero_point=zp[1], y_scale=yp[0], y_zero_point=yp[1])
        out = add.outputs[0]
        _replace_conv(graph, conv, [*conv.inputs[:4], b], out, attrs, [add])
        return True
    return False


def _u8_maxpool(graph: Graph, pool: Node) -> bool:
    x = pool.inputs[0]
    if x is None or x.dtype != DType.UINT8 or not is_transparent(pool):
        return False
    attrs = dict(pool.attrs)
    attrs.update(x_scale=1.0, x_zero_point=0)  # max over codes: scale and zero point pass through
    _replace(graph, pool, Node("QMaxPool", [x], list(pool.outputs), attrs, pool.name, DOMAIN, 1,
                               origin=list(pool.origin)))
    return True


def _fast_qdq(graph: Graph, node: Node) -> bool:
    """Per-tensor uint8 QuantizeLinear / DequantizeLinear left over → tensorkiln::Quantize / Dequantize."""
    if node.domain != "" or node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
        return False
    p = act_params(node)
    x = node.inputs[0]
    if isinstance(p, str) or x is None or x.const is not None:
        return False
    if node.op_type == "QuantizeLinear":
        if x.dtype not in (DType.FLOAT32, None) or int(node.attrs.get("saturate", 1)) != 1 or \
                int(node.attrs.get("output_dtype", 0)) not in (0, DType.UINT8.value):
            return False
        new = Node("Quantize", [x], list(node.outputs), {"y_scale": p[0], "y_zero_point": p[1]}, node.name, DOMAIN,
                   1, origin=list(node.origin))
    else:
        if x.dtype not in (DType.UINT8, None) or int(node.attrs.get("output_dtype", 0)) not in (0, 1):
            return False
        new = Node("Dequantize", [x], list(node.outputs), {"x_scale": p[0], "x_zero_point": p[1]}, node.name,
                   DOMAIN, 1, origin=list(node.origin))
    i = graph.nodes.index(node)
    graph.remove_node(node)
    graph.nodes.insert(i, new)
    x.uses.append((new, 0))
    for v in new.outputs:
        v.producer = new
    return True


def run(graph: Graph, report: RuleReport) -> bool:
    narrowed: list[str] = []
    fired = 0
    for node in list(graph.nodes):
        if node.domain == "" and node.op_type in ("Conv", "Gemm", "MatMul") and node in graph.nodes:
            if _producer(node.inputs[0], "DequantizeLinear") is None:
                continue
            fired += _layer(graph, node, report, narrowed)
    for node in list(graph.nodes):
        if node.qualified_op in ("QLinearConv", "QLinearMatMul", "com.microsoft::QGemm") and node in graph.nodes:
            fired += _qop_layer(graph, node, report, narrowed)
    for node in list(graph.nodes):
        if node in graph.nodes and node.qualified_op == "com.microsoft::QLinearAdd":
            fired += _qop_add(graph, node)
        elif node in graph.nodes and node.domain == "" and node.op_type == "MaxPool" and fired:
            fired += _u8_maxpool(graph, node)
    for node in list(graph.nodes):
        if node in graph.nodes and node.domain == "" and node.op_type == "Add":
            if all(_producer(v, "DequantizeLinear") is not None for v in node.inputs[:2]):
                fired += _fuse_add(graph, node, report)
        elif node in graph.nodes and node.domain == "" and node.op_type == "MaxPool":
            fired += _maxpool(graph, node, report)
        elif node in graph.nodes and node.domain == "" and node.op_type == "GlobalAveragePool" and fired:
            fired += _gap(graph, node)
    for node in list(graph.nodes):
        if node in graph.nodes and node.domain == "" and node.op_type in RESHAPES and fired:
            fired += _reshape_codes(graph, node)
    if fired:  # the activations' remaining Q/DQ (around float ops) run on the fast uint8 kernels
        for node in list(graph.nodes):
            _fast_qdq(graph, node)
    for name in narrowed:
        report.reject(Node("QConv", [], [], name=name), "weights wider than 7 bits re-rounded to 7 bits (no VNNI)")
    report.fired += fired
    return fired > 0
