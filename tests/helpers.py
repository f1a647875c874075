"""Small ONNX model builders shared by tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_model(opset: int = 17) -> onnx.ModelProto:
    """y = relu(x @ W + b) + 1, with W as an initializer and 1 from a Constant node."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal((3,)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"], name="mm"),
        helper.make_node("Add", ["xw", "b"], ["xwb"], name="add_bias"),
        helper.make_node("Relu", ["xwb"], ["r"], name="relu"),
        helper.make_node("Constant", [], ["one"], name="const_one",
                         value=numpy_helper.from_array(np.array(1.0, np.float32))),
        helper.make_node("Add", ["r", "one"], ["y"], name="add_one"),
    ]
    g = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def tiny_reference(x: np.ndarray, model: onnx.ModelProto) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, {"x": x})[0]
