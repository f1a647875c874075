import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.passes.util import before_after, make_model, ops

rng = np.random.default_rng(1)
X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)


def _inits() -> list:  # type: ignore[type-arg]
    return [numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B")]


def _feeds() -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((1, 4, 9, 9)).astype(np.float32)}


ACTS = [
    ("Relu", {}, []),
    ("LeakyRelu", {"alpha": 0.1}, []),
    ("Sigmoid", {}, []),
    ("Tanh", {}, []),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, []),
    ("HardSwish", {}, []),
    ("Clip", {}, ["lo", "hi"]),
]


@pytest.mark.parametrize("act,attrs,extra", ACTS, ids=[a[0] for a in ACTS])
def test_conv_activation_fuses(act: str, attrs: dict, extra: list) -> None:  # type: ignore[type-arg]
    inits = _inits() + [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
                        numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node(act, ["c", *extra], ["y"], name="act", **attrs)]
    _, after = before_after(make_model(nodes, [X], [Y], inits), _feeds())
    assert ops(after) == ["tensorkiln::FusedConv"]
    assert after.steps()[0]["origin"] == ["conv", "act"]


def test_conv_residual_add_relu_fuses() -> None:
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["c", "x"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    before, after = before_after(make_model(nodes, [X], [Y], _inits()), _feeds())
    assert len(ops(before)) == 3
    assert ops(after) == ["tensorkiln::FusedConv"]
    assert after.steps()[0]["origin"] == ["conv", "add", "relu"]
    assert after.build_reports["fuse-conv"]["fired"] == 1


def test_strided_asymmetric_pads_and_groups() -> None:
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[0, 1, 2, 1], strides=[2, 2], group=2),
             helper.make_node("Relu", ["c"], ["y"])]
    _, after = before_after(make_model(nodes, [X], [Y], [w]), _feeds())
    assert ops(after) == ["tensorkiln::FusedConv"]


def test_residual_with_broadcast_shape_is_not_fused() -> None:
    bias = numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype(np.float32), "R")
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["c", "R"], ["y"], name="add")]
    _, after = before_after(make_model(nodes, [X], [Y], [*_inits(), bias]), _feeds(),
                            passes_disabled=["inplace-elementwise"])
    assert ops(after) == ["tensorkiln::FusedConv", "Add"]
    reasons = [r for _, r in after.build_reports["fuse-conv"]["why_not"]]
    assert any("not known to equal" in r for r in reasons)


def test_fusion_switch_off() -> None:
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    _, after = before_after(make_model(nodes, [X], [Y], _inits()), _feeds(), fusion=False)
    assert ops(after) == ["Conv", "Relu"]
