import numpy as np
import pytest
import torch

import tensorkiln
from tensorkiln.errors import FeedError, OptionError
from tests.helpers import tiny_model, tiny_reference


@pytest.fixture(scope="module")
def engine() -> tensorkiln.Engine:
    return tensorkiln.build(tiny_model())


def test_run_matches_reference_for_several_batches(engine: tensorkiln.Engine) -> None:
    for n in (1, 3, 8):
        x = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
        np.testing.assert_allclose(engine.run({"x": x})["y"], tiny_reference(x, tiny_model()), rtol=1e-6)


def test_torch_tensor_inputs_and_outputs(engine: tensorkiln.Engine) -> None:
    x = torch.randn(2, 4)
    out = engine.run({"x": x}, as_torch=True)["y"]
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)


def test_unknown_input_name(engine: tensorkiln.Engine) -> None:
    with pytest.raises(FeedError, match=r"unknown input name\(s\) \['X'\].*x: float32\[batchx4\]"):
        engine.run({"X": np.zeros((1, 4), np.float32)})


def test_missing_input(engine: tensorkiln.Engine) -> None:
    with pytest.raises(FeedError, match="missing input"):
        engine.run({})


def test_wrong_dtype(engine: tensorkiln.Engine) -> None:
    with pytest.raises(FeedError, match="expects dtype float32, got float64"):
        engine.run({"x": np.zeros((1, 4))})


def test_wrong_rank(engine: tensorkiln.Engine) -> None:
    with pytest.raises(FeedError, match=r"expects rank 2 .*got rank 1"):
        engine.run({"x": np.zeros(4, np.float32)})


def test_wrong_size(engine: tensorkiln.Engine) -> None:
    with pytest.raises(FeedError, match=r"expects size 4 on axis 1.*got 5"):
        engine.run({"x": np.zeros((1, 5), np.float32)})


def test_feeds_not_a_mapping(engine: tensorkiln.Engine) -> None:
    with pytest.raises(FeedError, match="mapping"):
        engine.run([np.zeros((1, 4), np.float32)])  # type: ignore[arg-type]


def test_unknown_build_option() -> None:
    with pytest.raises(OptionError, match="unknown build option"):
        tensorkiln.build(tiny_model(), fast=True)


def test_outputs_never_alias_weights_or_inputs() -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["w"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])],
        initializer=[numpy_helper.from_array(np.ones(2, np.float32), "w")])
    eng = tensorkiln.build(helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)]))
    x = np.zeros(2, np.float32)
    out = eng.run({"x": x})
    out["y"][:] = 5
    out["z"][:] = 7
    assert x[0] == 0
    np.testing.assert_array_equal(eng.run({"x": x})["z"], [1, 1])


def test_unsupported_ops_listed_together() -> None:
    from onnx import TensorProto, helper

    nodes = [helper.make_node("FancyOp", ["x"], ["a"], name="f1"),
             helper.make_node("FancyOp", ["a"], ["b"], name="f2"),
             helper.make_node("OtherOp", ["b"], ["y"], name="o1", domain="com.acme")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 2)])
    with pytest.raises(tensorkiln.UnsupportedOpError) as ei:
        tensorkiln.build(m)
    msg = str(ei.value)
    assert "2 operator(s)" in msg
    assert "FancyOp (opset 17): nodes 'f1', 'f2'" in msg
    assert "com.acme::OtherOp (opset 2): nodes 'o1'" in msg
