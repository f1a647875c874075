import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.passes.util import before_after, make_model, ops

rng = np.random.default_rng(3)


def _w(name: str, *shape: int) -> object:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def test_matmul_bias_relu_fuses_3d() -> None:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "b"], ["a"], name="bias"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [_w("W", 8, 5), _w("b", 5)])
    _, after = before_after(m, {"x": rng.standard_normal((2, 3, 8)).astype(np.float32)})
    assert ops(after) == ["tensorkiln::FusedGemm"]
    assert after.steps()[0]["origin"] == ["mm", "bias", "relu"]


@pytest.mark.parametrize("trans_b,alpha,beta", [(0, 1.0, 1.0), (1, 0.5, 2.0)])
def test_gemm_variants_fuse(trans_b: int, alpha: float, beta: float) -> None:
    wshape = (5, 8) if trans_b else (8, 5)
    nodes = [helper.make_node("Gemm", ["x", "W", "C"], ["g"], transB=trans_b, alpha=alpha, beta=beta),
             helper.make_node("Sigmoid", ["g"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [_w("W", *wshape), _w("C", 5)])
    _, after = before_after(m, {"x": rng.standard_normal((4, 8)).astype(np.float32)})
    assert ops(after) == ["tensorkiln::FusedGemm"]


def test_matmul_with_runtime_weight_is_left_alone() -> None:
    nodes = [helper.make_node("MatMul", ["x", "z"], ["y"])]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, [3, 2])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [])
    feeds = {"x": rng.standard_normal((2, 3)).astype(np.float32), "z": rng.standard_normal((3, 2)).astype(np.float32)}
    _, after = before_after(m, feeds)
    assert ops(after) == ["MatMul"]
    assert "not a constant" in after.build_reports["fuse-gemm"]["why_not"][0][1]
