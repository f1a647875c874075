"""Calibration through build(): batch-size independence, the JSON cache, options and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tensorkiln
from tests.quant.models import images, small_cnn


def _feeds(x: np.ndarray, bs: int) -> list[dict[str, np.ndarray]]:
    return [{"x": x[i:i + bs]} for i in range(0, len(x), bs)]


def test_same_calibration_for_any_batch_size(tmp_path: Path) -> None:
    m, x = small_cnn(), images(32)
    docs = []
    for bs in (1, 8, 32):
        path = tmp_path / f"c{bs}.json"
        tensorkiln.build(m, precision="int8", calibration_data=_feeds(x, bs), calibration_cache=str(path))
        docs.append(json.loads(path.read_text()))
    assert docs[0] == docs[1] == docs[2]
    assert docs[0]["samples"] == 32 and len(docs[0]["tensors"]) >= 8


def test_cache_is_readable_json_and_reused(tmp_path: Path) -> None:
    m, x = small_cnn(), images(32)
    path = tmp_path / "calib.json"
    a = tensorkiln.build(m, precision="int8", strict=True, calibrator="entropy", calibration_data=_feeds(x, 8),
                         calibration_cache=str(path))
    doc = json.loads(path.read_text())
    assert all(set(e) == {"lo", "hi", "method"} and e["method"] == "entropy" for e in doc["tensors"].values())
    b = tensorkiln.build(m, precision="int8", strict=True, calibration_cache=str(path))  # no data needed
    assert b.build_reports["precision"]["from_cache"] is True
    xt = images(4, seed=7)
    np.testing.assert_array_equal(a.run({"x": xt})["logits"], b.run({"x": xt})["logits"])


def test_cache_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(tensorkiln.OptionError, match="cannot read calibration cache"):
        tensorkiln.build(small_cnn(), precision="int8", calibration_cache=str(bad))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "tensorkiln-calibration", "version": 1, "tensors": {}}))
    with pytest.raises(tensorkiln.OptionError, match="lacks"):
        tensorkiln.build(small_cnn(), precision="int8", calibration_cache=str(other))


def test_int8_without_data_or_cache_says_how_to_fix() -> None:
    with pytest.raises(tensorkiln.OptionError, match="calibration_data"):
        tensorkiln.build(small_cnn(), precision="int8")


@pytest.mark.parametrize(("opts", "match"), [
    ({"precision": "int4"}, "precision must be one of"),
    ({"precision": "int8", "calibrator": "kl"}, "unknown calibrator"),
    ({"precision": "int8", "accuracy_budget": 2.0}, "accuracy_budget"),
    ({"precision": "int8", "layer_precision": {"conv1": "int4"}}, "layer_precision"),
])
def test_bad_options(opts: dict[str, object], match: str) -> None:
    with pytest.raises(tensorkiln.OptionError, match=match):
        tensorkiln.build(small_cnn(), calibration_data=[{"x": images(4)}], **opts)  # type: ignore[arg-type]


def test_calibration_feed_errors() -> None:
    with pytest.raises(tensorkiln.OptionError, match="lacks input"):
        tensorkiln.build(small_cnn(), precision="int8", calibration_data=[{"y": images(2)}])
    with pytest.raises(tensorkiln.OptionError, match="dicts"):
        tensorkiln.build(small_cnn(), precision="int8", calibration_data=[images(2)])


def test_layer_overrides_by_name_and_op_type() -> None:
    m, x = small_cnn(), images(32)
    e = tensorkiln.build(m, precision="int8", calibration_data=_feeds(x, 8), opt_level=0,
                         layer_precision={"conv2": "fp32", "Gemm": "fp32"})
    layers = e.build_reports["precision"]["layers"]
    assert layers["conv2"] == "fp32" and layers["fc1"] == "fp32" and layers["fc2"] == "fp32"
    assert layers["conv1"] == "int8"
    ops = {s["name"]: s["op"] for s in e.steps()}
    assert ops["conv2"] == "tensorkiln::FusedConv" and ops["conv1"] == "tensorkiln::QConv"


def test_auto_calibrator_picks_per_tensor_and_reports() -> None:
    e = tensorkiln.build(small_cnn(), precision="int8", calibration_data=_feeds(images(64), 16), opt_level=0)
    rep = e.build_reports["precision"]
    assert rep["calibrator"] == "auto" and sum(rep["methods"].values()) >= 5  # tensors the int8 plan quantizes
    assert set(rep["methods"]) <= {"minmax", "entropy", "percentile-99.9", "percentile-99.99", "percentile-99.999",
                                   "mse"}


def test_precision_best_uses_int8_with_data_and_explains_float_formats() -> None:
    from tensorkiln.quant.lowp import computes_in

    e = tensorkiln.build(small_cnn(), precision="best", calibration_data=_feeds(images(32), 8), opt_level=0)
    rep = e.build_reports["precision"]
    assert "int8" in rep["layers"].values()
    if not computes_in("fp16") and not computes_in("bf16"):
        assert any("storage only" in n for n in rep["notes"]), rep["notes"]
    none = tensorkiln.build(small_cnn(), precision="best").build_reports["precision"]
    assert any("no calibration_data" in n for n in none["notes"])


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_strict_fp16_bf16_run_correctly(fmt: str) -> None:
    x = images(8)
    ref = tensorkiln.build(small_cnn()).run({"x": x})["logits"]
    e = tensorkiln.build(small_cnn(), precision=fmt, strict=True)
    got = e.run({"x": x})["logits"]
    rep = e.build_reports["precision"]
    assert set(rep["layers"].values()) == {fmt} and rep["float_precision"] == fmt
    tol = 2e-3 if fmt == "fp16" else 2e-2  # 11 vs 8 significant bits in storage
    assert float(np.abs(got - ref).max()) <= tol * float(np.abs(ref).max()) * 4
    assert not np.array_equal(got, ref)  # the low-precision storage really happened
