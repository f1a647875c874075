"""Small ONNX CNNs for the int8 tests (random weights, fixed seed)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def small_cnn(seed: int = 0, residual: bool = True, c: int = 8) -> onnx.ModelProto:
    """x[N,3,16,16] → Conv3x3+Relu → MaxPool2 → Conv3x3 (+ residual Add) + Relu → Conv1x1 →
    GlobalAveragePool → Flatten → Gemm+Relu → Gemm → logits[N,10]."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 1.0) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * scale * np.sqrt(2.0 / fan_in)).astype(np.float32)

    inits = {
        "W1": w(c, 3, 3, 3), "B1": (rng.standard_normal(c) * 0.1).astype(np.float32),
        "W2": w(c, c, 3, 3), "B2": (rng.standard_normal(c) * 0.1).astype(np.float32),
        "W3": w(2 * c, c, 1, 1), "B3": (rng.standard_normal(2 * c) * 0.1).astype(np.float32),
        "G1": w(32, 2 * c).T.copy(), "GB1": (rng.standard_normal(32) * 0.1).astype(np.float32),
        "G2": w(10, 32).T.copy(), "GB2": (rng.standard_normal(10) * 0.1).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    if residual:
        nodes.append(helper.make_node("Add", ["c2", "p1"], ["a2"], name="add2"))
        nodes.append(helper.make_node("Relu", ["a2"], ["r2"], name="relu2"))
    else:
        nodes.append(helper.make_node("Relu", ["c2"], ["r2"], name="relu2"))
    nodes += [
        helper.make_node("Conv", ["r2", "W3", "B3"], ["c3"], name="conv3"),
        helper.make_node("GlobalAveragePool", ["c3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "G1", "GB1"], ["g1"], name="fc1"),
        helper.make_node("Relu", ["g1"], ["h1"], name="relu_fc1"),
        helper.make_node("Gemm", ["h1", "G2", "GB2"], ["logits"], name="fc2"),
    ]
    g = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def images(n: int, seed: int = 1) -> np.ndarray:
    """Smooth random images [n, 3, 16, 16] in about [-1, 1] (less white-noise than randn)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 3, 4, 4)).astype(np.float32)
    x = np.repeat(np.repeat(base, 4, axis=2), 4, axis=3)
    return (x + 0.2 * rng.standard_normal(x.shape)).astype(np.float32)
