import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.passes.util import before_after, make_model, ops

rng = np.random.default_rng(11)


def _model() -> object:
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    w2 = numpy_helper.from_array(rng.standard_normal((4 * 3 * 3, 2)).astype(np.float32), "W2")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "W2"], ["y"], name="fc"),
             helper.make_node("Sigmoid", ["c"], ["dead"], name="unused_branch")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, w2])


def test_layout_marks_conv_region_nhwc_and_reorders_before_flatten() -> None:
    _, after = before_after(_model(), {"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32)})
    layout = {s["op"]: s["layout"] for s in after.steps()}
    assert layout["tensorkiln::FusedConv"] == "nhwc"
    assert layout["MaxPool"] == "nhwc (follows input)"
    assert layout["Flatten"] == "reorder nhwc → nchw"
    assert after.build_reports["select-layout"]["fired"] == 1


def test_layout_switch_keeps_nchw() -> None:
    _, after = before_after(_model(), {"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32)}, layout=False)
    conv = next(s for s in after.steps() if s["op"] == "tensorkiln::FusedConv")
    assert conv["layout"] == "any" and conv["tactic"] in ("", "aten-nchw")


def test_dead_branch_removed() -> None:
    before, after = before_after(_model(), {"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32)},
                                 fusion=False)
    assert "Sigmoid" in ops(before) and "Sigmoid" not in ops(after)
    assert after.build_reports["dead-code"]["fired"] == 1
