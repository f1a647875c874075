"""Dynamic quantization (``calibrator="dynamic"``): MatMul/Gemm layers with int8 weights, activations
quantized per call — no calibration data."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import tensorkiln


def mlp(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32), n)
             for n, s in (("W1", (64, 128)), ("W2", (128, 64)), ("W3", (64, 16)))]
    inits.append(numpy_helper.from_array(rng.standard_normal(128).astype(np.float32) * 0.1, "b1"))
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"]), helper.make_node("Add", ["h1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]), helper.make_node("MatMul", ["r1", "W2"], ["h2"]),
        helper.make_node("Tanh", ["h2"], ["t2"]), helper.make_node("MatMul", ["t2", "W3"], ["y"]),
    ]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10, 16])], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_dynamic_int8_matmuls_need_no_calibration() -> None:
    m = mlp()
    x = np.random.default_rng(1).standard_normal((3, 10, 64)).astype(np.float32)
    ref = tensorkiln.build(m).run({"x": x})["y"]
    q = tensorkiln.build(m, precision="int8", calibrator="dynamic")
    ops = [s["op"] for s in q.steps()]
    assert ops.count("tensorkiln::DynQGemm") == 3, ops
    rep = q.build_reports["precision"]
    assert rep["fired"] == 3 and set(rep["layers"].values()) == {"int8-dynamic"}
    got = q.run({"x": x})["y"]
    cos = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos > 0.995 and float(np.abs(got - ref).max()) < 0.1 * float(np.abs(ref).max())
    # each call quantizes its own input: 100x larger or 100x smaller inputs work as well
    for f in (100.0, 0.01):
        got2, ref2 = q.run({"x": f * x})["y"], tensorkiln.build(m).run({"x": f * x})["y"]
        assert float((ref2 * got2).sum() / np.linalg.norm(ref2) / np.linalg.norm(got2)) > 0.99, f


def test_dynamic_respects_layer_overrides() -> None:
    q = tensorkiln.build(mlp(), precision="int8", calibrator="dynamic", layer_precision={"MatMul_5": "fp32"})
    ops = [s["op"] for s in q.steps()]
    assert ops.count("tensorkiln::DynQGemm") == 2 and "tensorkiln::FusedGemm" in ops
