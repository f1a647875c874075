"""com.microsoft contrib kernels against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tensorkiln
from tests.backends.cpu import util

ort = pytest.importorskip("onnxruntime")

F, F16, I32 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT32
MS = "com.microsoft"


def run_both(node: onnx.NodeProto, feeds: dict[str, np.ndarray], outs: list[str],
             inits: dict[str, np.ndarray] | None = None, rtol: float = 1e-4,
             atol: float = 1e-5) -> dict[str, np.ndarray]:
    """Build a one-node model, run it on onnxruntime and tensorkiln, compare all outputs."""
    m = util.graph_model(node, feeds, outs, inits, opset=17, domains={MS: 1}, ir_version=8)
    return util.compare_model(m, feeds, optimize=True, rtol=rtol, atol=atol, upcast=True)


rng = np.random.default_rng(0)


def randn(*shape: int, dtype: type = np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("op", ["Gelu", "QuickGelu"])
def test_unary_gelus(op: str) -> None:
    run_both(helper.make_node(op, ["x"], ["y"], domain=MS), {"x": randn(2, 3, 8)}, ["y"])


def test_bias_gelus() -> None:
    feeds = {"x": randn(2, 3, 8), "b": randn(8)}
    run_both(helper.make_node("BiasGelu", ["x", "b"], ["y"], domain=MS), feeds, ["y"])
    run_both(helper.make_node("FastGelu", ["x", "b"], ["y"], domain=MS), feeds, ["y"])
    run_both(helper.make_node("FastGelu", ["x"], ["y"], domain=MS), {"x": feeds["x"]}, ["y"])


def test_bias_add() -> None:  # onnxruntime has it for CUDA only
    feeds = {"x": randn(2, 3, 8), "b": randn(8), "s": randn(2, 3, 8)}
    inputs = [helper.make_tensor_value_info(k, F, v.shape) for k, v in feeds.items()]
    g = helper.make_graph([helper.make_node("BiasAdd", ["x", "b", "s"], ["y"], domain=MS)], "g", inputs,
                          [helper.make_tensor_value_info("y", F, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    y = tensorkiln.build(m).run(feeds)["y"]
    np.testing.assert_allclose(y, feeds["x"] + feeds["b"] + feeds["s"], rtol=1e-6)


@pytest.mark.parametrize(("ta", "tb", "alpha"), [(0, 0, 1.0), (1, 0, 0.5), (0, 1, 2.0), (1, 1, 1.0)])
def test_fused_matmul(ta: int, tb: int, alpha: float) -> None:
    a = randn(2, 5, 4) if ta else randn(2, 4, 5)
    b = randn(6, 5) if tb else randn(5, 6)
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, transA=ta, transB=tb, alpha=alpha)
    run_both(node, {"a": a, "b": b}, ["y"])


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("n_out", [1, 4])
def test_skip_layer_norm(with_bias: bool, n_out: int) -> None:
    feeds = {"x": randn(2, 3, 16), "s": randn(2, 3, 16)}
    inits = {"g": randn(16), "be": randn(16)}
    ins = ["x", "s", "g", "be"]
    if with_bias:
        inits["bi"] = randn(16)
        ins.append("bi")
    outs = ["y", "", "", "sum"][:n_out]
    node = helper.make_node("SkipLayerNormalization", ins, outs, domain=MS, epsilon=1e-5)
    run_both(node, feeds, [o for o in outs if o], inits)


def test_skip_simplified_layer_norm() -> None:
    feeds = {"x": randn(2, 3, 16), "s": randn(2, 3, 16)}
    node = helper.make_node("SkipSimplifiedLayerNormalization", ["x", "s", "g", "bi"],
                            ["y", "", "", "sum"], domain=MS, epsilon=1e-6)
    run_both(node, feeds, ["y", "sum"], {"g": randn(16), "bi": randn(16)})


def test_simplified_layer_norm() -> None:
    node = helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["y"], epsilon=1e-6)
    run_both(node, {"x": randn(2, 3, 16)}, ["y"], {"g": randn(16)})


def test_skip_layer_norm_float16() -> None:
    feeds = {"x": randn(2, 3, 16, dtype=np.float16), "s": randn(2, 3, 16, dtype=np.float16)}
    node = helper.make_node("SkipLayerNormalization", ["x", "s", "g", "be"], ["y"], domain=MS)
    run_both(node, feeds, ["y"], {"g": randn(16, dtype=np.float16), "be": randn(16, dtype=np.float16)},
             rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("with_seg", [False, True])
def test_embed_layer_norm(with_seg: bool) -> None:
    B, S, H, V = 2, 5, 16, 30
    feeds = {"ids": rng.integers(0, V, (B, S)).astype(np.int32)}
    inits = {"word": randn(V, H), "pos": randn(S + 3, H), "g": randn(H), "be": randn(H)}
    if with_seg:
        feeds["seg"] = rng.integers(0, 2, (B, S)).astype(np.int32)
        inits["segemb"] = randn(2, H)
    mask = np.ones((B, S), np.int32)
    mask[1, 3:] = 0
    feeds["mask"] = mask
    ins = ["ids", "seg" if with_seg else "", "word", "pos", "segemb" if with_seg else "", "g", "be", "mask"]
    node = helper.make_node("EmbedLayerNormalization", ins, ["y", "mi"], domain=MS, epsilon=1e-5)
    got = run_both(node, feeds, ["y", "mi"], inits)
    np.testing.assert_array_equal(got["mi"], [5, 3])
