"""The int8 rewrite (passes/quantize.py): structure, uint8 between layers, and the built engine
computing what the calibration simulation predicted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tensorkiln
from tensorkiln.engine.builder import _graph_runner
from tensorkiln.engine.engine import BuildConfig, Engine
from tensorkiln.frontends.onnx_import import import_onnx
from tensorkiln.ir import DType
from tensorkiln.passes import quantize, run_pipeline
from tensorkiln.quant.calibrate import choose_ranges, collect
from tensorkiln.quant.plan import QuantPlan, layer_key, layer_kind
from tensorkiln.quant.simulate import hooks_for
from tests.quant.models import images, small_cnn


def _fused_graph(residual: bool = True):  # type: ignore[no-untyped-def]
    g = import_onnx(small_cnn(residual=residual))
    run_pipeline(g)
    return g


def _ranges(g, x: np.ndarray) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    from tensorkiln.quant.plan import tapped_values

    cands = [n for n in g.nodes if layer_kind(n)]
    cal = collect(_graph_runner(g), [{"x": x}], [v.name for v in tapped_values(g, cands)], progress=False)
    return {k: (r.lo, r.hi) for k, r in choose_ranges(cal, "minmax").items()}


@pytest.mark.parametrize("residual", [True, False])
def test_rewrite_keeps_uint8_between_int8_layers(residual: bool) -> None:
    g = _fused_graph(residual)
    layers = [n for n in g.nodes if layer_kind(n)]
    assert [n.op_type for n in layers] == ["FusedConv"] * 3 + ["FusedGemm"] * 2
    rep = quantize.apply(g, QuantPlan([layer_key(n) for n in layers], _ranges(g, images(16))))
    ops = [n.op_type for n in g.nodes]
    assert ops == ["QConv", "QMaxPool", "QConv", "QConv", "GlobalAveragePool", "Flatten", "QGemm", "QGemm"]
    by = {n.name: n for n in g.nodes}
    # conv1 → pool → conv2 (and its residual) → conv3 stay uint8; conv3 feeds a float pool
    assert by["conv1"].outputs[0].dtype == DType.UINT8 and by["conv1"].attrs["out_dtype"] == "uint8"
    assert by["pool1"].outputs[0].dtype == DType.UINT8
    assert by["conv3"].attrs["out_dtype"] == "float32"
    assert by["fc1"].attrs["out_dtype"] == "uint8" and by["fc2"].attrs["out_dtype"] == "float32"
    assert g.outputs[0].dtype == DType.FLOAT32
    assert rep["uint8_tensors"] == 4  # conv1, pool1, conv2 (relu2), fc1
    # QMaxPool passes its input's scale and zero point on
    assert by["pool1"].attrs["x_scale"] == by["conv1"].attrs["y_scale"] == by["conv2"].attrs["x_scale"]


def test_engine_computes_what_the_simulation_predicted() -> None:
    x_cal, x = images(32), images(8, seed=5)
    g = _fused_graph()
    ranges = _ranges(g, x_cal)
    layers = [n for n in g.nodes if layer_kind(n)]
    runner = _graph_runner(g)
    h = hooks_for(g, layers, ranges)
    with torch.inference_mode():
        sim = runner([torch.from_numpy(x)], **h.kwargs())[0]  # type: ignore[arg-type]
        fp32 = runner([torch.from_numpy(x)])[0]
    quantize.apply(g, QuantPlan([layer_key(n) for n in layers], ranges))
    got = torch.from_numpy(Engine(g, BuildConfig(), {}).run({"x": x})["logits"])
    err_q = float((got - fp32).abs().max())
    err_sim = float((got - sim).abs().max())
    assert err_q > 1e-3  # int8 really changed something …
    assert err_sim < 0.02 * err_q, (err_sim, err_q)  # … and exactly what the simulation said


def test_build_int8_small_cnn_accuracy_and_report() -> None:
    m = small_cnn()
    x_cal, x = images(64), images(16, seed=9)
    fp = tensorkiln.build(m)
    q = tensorkiln.build(m, precision="int8", calibration_data=[{"x": x_cal[i:i + 8]} for i in range(0, 64, 8)],
                         opt_level=0)
    ref, got = fp.run({"x": x})["logits"], q.run({"x": x})["logits"]
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.9
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.99
    rep = q.build_reports["precision"]
    assert rep["fired"] == sum(v == "int8" for v in rep["layers"].values()) >= 1
    assert rep["metric"] == "top1" and rep["held_out"] == 12
    assert "measured_score" in rep and rep["measured_score"] >= 0.0
    assert any(s["op"] == "tensorkiln::QConv" for s in q.steps())


def test_int8_engine_saves_and_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = small_cnn()
    q = tensorkiln.build(m, precision="int8", strict=True, calibrator="minmax",
                         calibration_data=[{"x": images(16)}])
    x = images(4, seed=3)
    q.save(tmp_path / "q.tkengine")
    back = tensorkiln.load(tmp_path / "q.tkengine")
    np.testing.assert_array_equal(back.run({"x": x})["logits"], q.run({"x": x})["logits"])
    assert back.config.precision == "int8"


def test_speed_check_times_int8_layers_and_reports() -> None:
    m, x_cal = small_cnn(), images(40)
    q = tensorkiln.build(m, precision="int8", calibration_data=[{"x": x_cal}])  # default opt_level: timed
    rep = q.build_reports["precision"]
    # every layer the budget allowed in int8 was timed against its float kernel; slower ones stayed fp32
    assert set(rep["speed_ms"]) | set(rep["kept_fp32_for_accuracy"]) == set(rep["layers"])
    assert all(len(t) == 2 and t[0] > 0 and t[1] > 0 for t in rep["speed_ms"].values())
    assert all(rep["layers"][n] == "fp32" for n in rep["kept_fp32_for_speed"])
    ops = {s["name"]: s["op"] for s in q.steps()}
    for name, prec in rep["layers"].items():
        assert ops[name].startswith("tensorkiln::Q") == (prec == "int8"), (name, prec, ops[name])
