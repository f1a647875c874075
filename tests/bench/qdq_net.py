"""A small QDQ conv net (ONNX) for accuracy tests: three quantized conv layers and a classifier.

Activations are uint8 QuantizeLinear/DequantizeLinear pairs, weights int8 per output channel.
``corrupt`` multiplies one layer's weight scale, as a wrong calibration would.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LAYERS = ("conv1", "conv2", "conv3")


def qdq_net(seed: int = 0, corrupt: str | None = None, factor: float = 1.6, quantized: bool = True) -> onnx.ModelProto:
    """``quantized=False``: the same network in float (weights = the dequantized int8 ones, no Q/DQ)."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def qdq_act(x: str, tag: str, scale: float) -> str:
        if not quantized:
            return x
        s = const(f"{tag}_scale", np.array(scale, np.float32))
        z = const(f"{tag}_zp", np.array(128, np.uint8))
        nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [f"{tag}_q"], name=f"{tag}_quant"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_q", s, z], [f"{tag}_dq"], name=f"{tag}_dequant"))
        return f"{tag}_dq"

    x = qdq_act("image", "in", 4.0 / 127)
    cin = 3
    for name, cout in zip(LAYERS, (8, 16, 16)):
        w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * np.sqrt(2.0 / (cin * 9))
        ws = (np.abs(w).reshape(cout, -1).max(axis=1) / 127).astype(np.float32)
        wq = np.clip(np.round(w / ws[:, None, None, None]), -127, 127).astype(np.int8)
        scale = ws * (factor if name == corrupt else 1.0)
        if quantized:
            const(f"{name}_wq", wq)
            const(f"{name}_wscale", scale.astype(np.float32))
            const(f"{name}_wzp", np.zeros(cout, np.int8))
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_wq", f"{name}_wscale", f"{name}_wzp"],
                                          [f"{name}_w"], name=f"{name}_wdequant", axis=0))
        else:
            const(f"{name}_w", (wq.astype(np.float32) * scale[:, None, None, None]).astype(np.float32))
        const(f"{name}_b", (rng.standard_normal(cout) * 0.1).astype(np.float32))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_out"], name=name,
                                      pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"{name}_out"], [f"{name}_relu"], name=f"{name}_relu"))
        x = qdq_act(f"{name}_relu", f"{name}_act", 3.0 / 255)
        cin = cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"))
    const("fc_w", (rng.standard_normal((10, cin)) * 0.3).astype(np.float32))
    const("fc_b", np.zeros(10, np.float32))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "qdq_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model

