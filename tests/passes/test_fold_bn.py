import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.passes.util import before_after, make_model, ops

rng = np.random.default_rng(0)


def _conv_bn(with_bias: bool, extra_reader: bool = False):  # type: ignore[no-untyped-def]
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W")]
    conv_in = ["x", "W"]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B"))
        conv_in.append("B")
    for name in ("s", "b", "m"):
        inits.append(numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), name))
    inits.append(numpy_helper.from_array(rng.uniform(0.5, 2, 8).astype(np.float32), "v"))
    nodes = [helper.make_node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"],
                              epsilon=1e-3, name="bn")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["c"], ["z"], name="neg"))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                      outputs, inits)


def feeds() -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}


def test_bn_folds_into_conv_with_and_without_bias() -> None:
    for bias in (True, False):
        before, after = before_after(_conv_bn(bias), feeds(), passes_disabled=["fuse-conv"])
        assert ops(before) == ["Conv", "BatchNormalization"]
        assert ops(after) == ["Conv"]
        assert after.build_reports["fold-batchnorm"]["fired"] == 1


def test_bn_not_folded_when_conv_output_has_other_readers() -> None:
    _, after = before_after(_conv_bn(True, extra_reader=True), feeds(), passes_disabled=["fuse-conv"])
    assert "BatchNormalization" in ops(after)
    rep = after.build_reports["fold-batchnorm"]
    assert rep["fired"] == 0 and "2 readers" in rep["why_not"][0][1]
