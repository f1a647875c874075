import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.passes.util import before_after, make_model, ops

rng = np.random.default_rng(5)


def _w(name: str, *shape: int) -> object:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def test_three_parallel_1x1_convs_merge_into_one() -> None:
    nodes = []
    for i in range(3):
        nodes += [helper.make_node("Conv", ["x", f"W{i}", f"B{i}"], [f"c{i}"], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
    # a 3x3 conv on the same input must stay separate
    nodes += [helper.make_node("Conv", ["x", "W3"], ["c3"], pads=[1, 1, 1, 1], name="conv3"),
              helper.make_node("Concat", ["r0", "r1", "r2", "c3"], ["y"], axis=1)]
    inits = [_w("W0", 4, 8, 1, 1), _w("B0", 4), _w("W1", 6, 8, 1, 1), _w("B1", 6), _w("W2", 2, 8, 1, 1), _w("B2", 2),
             _w("W3", 3, 8, 3, 3)]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    _, after = before_after(m, {"x": rng.standard_normal((1, 8, 5, 5)).astype(np.float32)})
    got = ops(after)
    assert got.count("tensorkiln::FusedConv") == 2  # the merged 1x1s and the 3x3
    assert got.count("tensorkiln::SplitChannels") == 1
    assert after.build_reports["merge-parallel-conv"]["fired"] == 1
    merged = next(s for s in after.steps() if s["op"] == "tensorkiln::FusedConv" and "conv0" in s["origin"])
    assert merged["origin"] == ["conv0", "relu0", "conv1", "relu1", "conv2", "relu2"]


def test_different_activations_are_not_merged() -> None:
    nodes = [helper.make_node("Conv", ["x", "W0"], ["c0"]), helper.make_node("Relu", ["c0"], ["y0"]),
             helper.make_node("Conv", ["x", "W1"], ["y1"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])],
                   [helper.make_tensor_value_info("y0", TensorProto.FLOAT, None),
                    helper.make_tensor_value_info("y1", TensorProto.FLOAT, None)],
                   [_w("W0", 4, 8, 1, 1), _w("W1", 4, 8, 1, 1)])
    _, after = before_after(m, {"x": rng.standard_normal((1, 8, 5, 5)).astype(np.float32)})
    assert ops(after).count("tensorkiln::FusedConv") == 2
