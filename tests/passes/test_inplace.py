import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.passes.util import before_after, make_model

rng = np.random.default_rng(7)


def _w(name: str, *shape: int) -> object:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def _block(extra_reader: bool) -> object:
    nodes = [helper.make_node("Conv", ["x", "W0"], ["a"], pads=[1, 1, 1, 1], name="c0"),
             helper.make_node("Relu", ["a"], ["z"], name="r0"),
             helper.make_node("Conv", ["z", "W1"], ["b0"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Conv", ["b0", "W2"], ["b"], pads=[1, 1, 1, 1], name="c2"),
             helper.make_node("Add", ["b", "z"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="r1")]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["z"], ["n"], name="late_reader"))
        outs.append(helper.make_tensor_value_info("n", TensorProto.FLOAT, None))
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])], outs,
                      [_w("W0", 4, 4, 3, 3), _w("W1", 4, 4, 3, 3), _w("W2", 4, 4, 3, 3)])


def test_residual_that_dies_is_written_in_place() -> None:
    x = {"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)}
    _, after = before_after(_block(False), x)
    assert after.build_reports["inplace-residual"]["fired"] == 1
    assert any(n.attrs.get("residual_inplace") for n in after.graph.nodes)
    # repeated runs stay correct (the in-place target is a fresh tensor every run)
    np.testing.assert_array_equal(after.run(x)["y"], after.run(x)["y"])


def test_residual_read_later_is_not_overwritten() -> None:
    x = {"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)}
    _, after = before_after(_block(True), x)
    assert after.build_reports["inplace-residual"]["fired"] == 0
    assert "read after this step" in after.build_reports["inplace-residual"]["why_not"][0][1]


def test_residual_that_is_also_the_conv_input_is_not_overwritten() -> None:
    nodes = [helper.make_node("Conv", ["x", "W0"], ["z"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["z", "W1"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["b", "z"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   [_w("W0", 4, 4, 3, 3), _w("W1", 4, 4, 3, 3)])
    _, after = before_after(m, {"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)})
    assert after.build_reports["inplace-residual"]["fired"] == 0


def test_elementwise_chain_runs_in_place() -> None:
    w = numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "R")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]),   # becomes a fresh FusedGemm output
             helper.make_node("Add", ["m", "x2"], ["s"]),     # residual add: in place into m
             helper.make_node("Mul", ["s", "R"], ["t"]),      # then in place again
             helper.make_node("Tanh", ["t"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5]),
                           helper.make_tensor_value_info("x2", TensorProto.FLOAT, [3, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, r])
    feeds = {"x": rng.standard_normal((3, 5)).astype(np.float32), "x2": rng.standard_normal((3, 4)).astype(np.float32)}
    x2 = feeds["x2"].copy()
    _, after = before_after(m, feeds)
    assert after.build_reports["inplace-elementwise"]["fired"] == 3
    np.testing.assert_array_equal(feeds["x2"], x2)  # the caller's input is never written


def test_in_place_never_writes_a_broadcast_operand_smaller_than_the_result() -> None:
    w = numpy_helper.from_array(rng.standard_normal((5, 1)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]),   # [3, 1]
             helper.make_node("Add", ["m", "x2"], ["y"])]     # [3, 1] + [3, 4] -> [3, 4]: not in place
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5]),
                           helper.make_tensor_value_info("x2", TensorProto.FLOAT, [3, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    feeds = {"x": rng.standard_normal((3, 5)).astype(np.float32), "x2": rng.standard_normal((3, 4)).astype(np.float32)}
    _, after = before_after(m, feeds)
    assert after.run(feeds)["y"].shape == (3, 4)
