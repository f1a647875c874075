import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.passes.util import before_after, make_model, ops


def test_common_subexpressions_merge() -> None:
    nodes = [helper.make_node("Exp", ["x"], ["a"], name="e1"), helper.make_node("Exp", ["x"], ["b"], name="e2"),
             helper.make_node("Add", ["a", "b"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [])
    before, after = before_after(m, {"x": np.array([0.0, 1.0, -1.0], np.float32)})
    assert ops(before).count("Exp") == 2 and ops(after).count("Exp") == 1
    assert after.build_reports["cse"]["fired"] == 1


def test_random_ops_are_not_merged() -> None:
    nodes = [helper.make_node("RandomUniformLike", ["x"], ["a"], seed=1.0),
             helper.make_node("RandomUniformLike", ["x"], ["b"], seed=1.0),
             helper.make_node("Sub", ["a", "b"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [])
    _, after = before_after(m, {"x": np.zeros(3, np.float32)})
    assert ops(after).count("RandomUniformLike") == 2


def test_reshape_and_transpose_chains_collapse() -> None:
    s1 = numpy_helper.from_array(np.array([6, 4], np.int64), "s1")
    s2 = numpy_helper.from_array(np.array([2, 12], np.int64), "s2")
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["a"], name="r1"),
             helper.make_node("Reshape", ["a", "s2"], ["b"], name="r2"),
             helper.make_node("Transpose", ["b"], ["c"], perm=[1, 0], name="t1"),
             helper.make_node("Transpose", ["c"], ["d"], perm=[1, 0], name="t2"),
             helper.make_node("Neg", ["d"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [s1, s2])
    before, after = before_after(m, {"x": np.arange(24, dtype=np.float32).reshape(2, 3, 4)})
    assert ops(before) == ["Reshape", "Reshape", "Transpose", "Transpose", "Neg"]
    assert ops(after) == ["Reshape", "Neg"]
    assert after.build_reports["collapse-reshapes"]["fired"] == 3


def test_reshape_with_copy_dims_is_kept() -> None:
    s1 = numpy_helper.from_array(np.array([6, 4], np.int64), "s1")
    s2 = numpy_helper.from_array(np.array([0, 4], np.int64), "s2")  # 0 = copy dim from the input
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["a"]), helper.make_node("Reshape", ["a", "s2"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [s1, s2])
    _, after = before_after(m, {"x": np.arange(24, dtype=np.float32).reshape(2, 3, 4)})
    assert ops(after) == ["Reshape", "Reshape"]
