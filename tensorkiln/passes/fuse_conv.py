"""Conv (+ residual Add) (+ activation) → one ``tensorkiln::FusedConv`` step.

# before -> after:  y = Relu(Add(Conv(x, W, b), z))  ->  y = FusedConv(x, W, b, z){activation=Relu}

FusedConv's inputs are (X, W, B?, Z?); it computes act(conv(X, W, B) + Z). The kernel runs
it as one oneDNN convolution with the add and activation as post-ops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tensorkiln.ir import Graph, Node, Value
from tensorkiln.passes.rewrite import RuleReport, consumer_reason

FUSED_DOMAIN = "tensorkiln"
# ONNX activation op → how FusedConv/FusedGemm name it (all computed exactly)
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu")


def activation_of(graph: Graph, node: Node) -> tuple[str, list[float]] | str:
    """(name, params) when ``node`` is an activation that can be fused, else a reason."""
    if node.domain != "" or node.op_type not in ACTIVATIONS:
        return f"{node.op_type} is not a fusable activation"
    op = node.op_type
    if op == "LeakyRelu":
        return op, [float(node.attrs.get("alpha", 0.01))]
    if op == "HardSigmoid":
        return op, [float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))]
    if op == "Gelu":
        return ("GeluTanh" if node.attrs.get("approximate", "none") == "tanh" else "Gelu"), []
    if op == "Clip":
        if node.opset < 11:
            return op, [float(node.attrs.get("min", -3.4028234663852886e38)),
                        float(node.attrs.get("max", 3.4028234663852886e38))]
        lo, hi = -np.inf, np.inf
        for i, default in ((1, -np.inf), (2, np.inf)):
            v = node.inputs[i] if len(node.inputs) > i else None
            if v is None:
                val = default
            elif v.const is None:
                return "Clip bounds are not constants"
            else:
                val = float(np.asarray(v.const).reshape(-1)[0])
            if i == 1:
                lo = val
            else:
                hi = val
        return op, [float(lo), float(hi)]
    return op, []


def _is_candidate(node: Node) -> str | None:
    if node.domain != "" or node.op_type != "Conv":
        return "not a Conv"
    w = node.inputs[1] if len(node.inputs) > 1 else None
    if w is None or w.const is None:
        return "Conv weight is not a constant"
    if w.const.dtype != np.float32:
        return f"Conv weight dtype is {w.const.dtype}, FusedConv takes float32"
    if w.const.ndim != 4:
        return f"Conv is {w.const.ndim - 2}-D; FusedConv takes 2-D convolutions"
    if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].const is None:
        return "Conv bias is not a constant"
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
        return f"auto_pad={node.attrs['auto_pad']} pads depend on the input size"
    return None


def _same_shape(a: Value, b: Value) -> bool:
    return (a.shape is not None and b.shape is not None and len(a.shape) == len(b.shape)
            and all(x == y and x is not None for x, y in zip(a.shape, b.shape)))


def run(graph: Graph, report: RuleReport | None = None) -> bool:
    report = report if report is not None else RuleReport()
    changed = False
    for conv in list(graph.nodes):
        if conv.op_type != "Conv" or conv.domain != "":
            continue
        reason = _is_candidate(conv)
        if reason:
            report.reject(conv, reason)
            continue
        absorbed: list[Node] = [conv]
        out = conv.outputs[0]
        residual: Value | None = None
        act: tuple[str, list[float]] | None = None
        nxt = _sole(graph, out, conv, report)
        if nxt is not None and nxt.op_type == "Add" and nxt.domain == "":
            other = nxt.inputs[1] if nxt.inputs[0] is out else nxt.inputs[0]
            if other is None or other is out:
                report.reject(nxt, "Add reads the convolution output twice")
            elif not _same_shape(other, out):
                report.reject(nxt, f"residual {other.name!r} shape {other.shape} is not known to equal "
                                   f"the convolution output's {out.shape}")
            elif other.dtype is not None and other.dtype != out.dtype:
                report.reject(nxt, "residual dtype differs")
            else:
                residual = other
                absorbed.append(nxt)
                out = nxt.outputs[0]
                nxt = _sole(graph, out, nxt, report)
        if nxt is not None:
            a = activation_of(graph, nxt)
            if nxt.domain == FUSED_DOMAIN and nxt.op_type == "FusedConv":
                report.reject(conv, f"output is the residual input of fused convolution {nxt.name!r}")
            elif isinstance(a, str):
                report.reject(nxt, a)
            else:
                act = a
                absorbed.append(nxt)
                out = nxt.outputs[0]
        _replace(graph, conv, absorbed, residual, act, out)
        report.fired += 1
        changed = True
    return changed


def _sole(graph: Graph, v: Value, producer: Node, report: RuleReport) -> Node | None:
    reason = consumer_reason(graph, v)
    if reason:
        report.reject(producer, f"cannot fuse past {reason}")
        return None
    return v.uses[0][0]


def _replace(graph: Graph, conv: Node, absorbed: list[Node], residual: Value | None,
             act: tuple[str, list[float]] | None, out: Value) -> None:
    attrs: dict[str, Any] = {k: v for k, v in conv.attrs.items()}
    attrs["activation"] = act[0] if act else ""
    attrs["activation_params"] = act[1] if act else []
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    fused = Node(
        op_type="FusedConv",
        inputs=[conv.inputs[0], conv.inputs[1], bias, residual],
        outputs=[out],
        attrs=attrs,
        name=conv.name,
        domain=FUSED_DOMAIN,
        opset=1,
        origin=[o for n in absorbed for o in n.origin],
    )
    pos = graph.nodes.index(absorbed[-1])
    for n in absorbed:
        graph.remove_node(n)
    graph.nodes.insert(pos - len(absorbed) + 1, fused)
    for i, v in enumerate(fused.inputs):
        if v is not None:
            v.uses.append((fused, i))
    out.producer = fused
