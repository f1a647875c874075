"""The README's precision example runs as written (on a small CNN saved as model.onnx)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

README = Path(__file__).resolve().parents[2] / "README.md"


def _precision_block() -> str:
    text = README.read_text()
    section = text[text.index("## Precision"):]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


def test_readme_precision_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((8, 3, 4, 4)) * 0.2).astype(np.float32), "W1")
    w2 = numpy_helper.from_array((rng.standard_normal((8, 5)) * 0.3).astype(np.float32), "W2")
    g = helper.make_graph([helper.make_node("Conv", ["input", "W1"], ["c"], strides=[4, 4]),
                           helper.make_node("Relu", ["c"], ["r"]),
                           helper.make_node("GlobalAveragePool", ["r"], ["p"]),
                           helper.make_node("Flatten", ["p"], ["f"]),
                           helper.make_node("MatMul", ["f", "W2"], ["output"])], "readme",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 5])], [w1, w2])
    onnx.save(onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])),
              str(tmp_path / "model.onnx"))
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(_precision_block(), "README.md", "exec"), scope)  # our own README, not user input
    assert (tmp_path / "model.calib.json").is_file()
    report = scope["report"]
    assert isinstance(report, dict) and report["precision"] == "int8" and report["layers"]
