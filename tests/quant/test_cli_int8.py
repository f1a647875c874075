"""`tensorkiln build --precision int8 --calib … --calib-cache …` and friends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import tensorkiln
from tensorkiln.cli import main
from tests.quant.models import images, small_cnn


def test_cli_int8_build_from_npz_then_from_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(small_cnn(), model)
    np.savez(tmp_path / "calib.npz", x=images(40))
    cache, eng = tmp_path / "calib.json", tmp_path / "m.tkengine"
    assert main(["build", str(model), "-o", str(eng), "--precision", "int8", "--calib", str(tmp_path / "calib.npz"),
                 "--calib-cache", str(cache), "--layer-precision", "fc2=fp32", "--opt-level", "0"]) == 0
    out = capsys.readouterr().out
    assert "precision int8" in out and "'int8': 4" in out, out
    assert json.loads(cache.read_text())["samples"] == 40
    e = tensorkiln.load(eng)
    ops = [s["op"] for s in e.steps()]
    assert ops.count("tensorkiln::QConv") == 3 and ops[-1] == "tensorkiln::FusedGemm"
    # the cache alone is enough for a rebuild (fc2's output was never calibrated: fc2 stays fp32)
    assert main(["build", str(model), "-o", str(tmp_path / "again.tkengine"), "--precision", "int8",
                 "--calib-cache", str(cache), "--accuracy-budget", "none", "--strict"]) == 0
    again = tensorkiln.load(tmp_path / "again.tkengine")
    assert [s["op"] for s in again.steps()] == ops


def test_cli_calib_directory_of_npy(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(small_cnn(), model)
    d = tmp_path / "calib"
    d.mkdir()
    for i in range(3):
        np.save(d / f"{i}.npy", images(8, seed=i))
    assert main(["build", str(model), "-o", str(tmp_path / "e.tkengine"), "--precision", "int8",
                 "--calib", str(d), "--calibrator", "entropy"]) == 0


def test_cli_precision_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(small_cnn(), model)
    assert main(["build", str(model), "-o", str(tmp_path / "e"), "--layer-precision", "conv1"]) == 2
    assert "--layer-precision expects" in capsys.readouterr().err
    assert main(["build", str(model), "-o", str(tmp_path / "e"), "--precision", "int8", "--calib", "nope.txt"]) == 2
    assert "--calib expects" in capsys.readouterr().err
