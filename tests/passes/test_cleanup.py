import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.passes.util import before_after, make_model, ops


def test_identity_and_dropout_removed() -> None:
    nodes = [helper.make_node("Identity", ["x"], ["a"]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Dropout", ["b"], ["c"]),
             helper.make_node("Neg", ["c"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [])
    before, after = before_after(m, {"x": np.array([-1, 0, 2], np.float32)})
    assert ops(before) == ["Identity", "Relu", "Dropout", "Neg"]
    assert ops(after) == ["Relu", "Neg"]


def test_identity_to_output_keeps_output_name() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [])
    _, after = before_after(m, {"x": np.array([-1, 0, 2], np.float32)})
    assert [s.name for s in after.outputs] == ["y"] and ops(after) == ["Relu"]


def test_constant_subgraph_folds() -> None:
    # shape arithmetic on constants: Reshape target computed from a constant via Mul
    c = numpy_helper.from_array(np.array([2, 3], np.int64), "c")
    one = numpy_helper.from_array(np.array([1, 1], np.int64), "one")
    nodes = [helper.make_node("Mul", ["c", "one"], ["shape"]),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [c, one])
    before, after = before_after(m, {"x": np.arange(6, dtype=np.float32)})
    assert ops(before) == ["Mul", "Reshape"]
    assert ops(after) == ["Reshape"]
    assert after.build_reports["fold-constants"]["fired"] == 1
