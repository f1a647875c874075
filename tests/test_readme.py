"""The README's Python API example runs as written (on a small model saved as model.onnx)."""

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

README = Path(__file__).resolve().parent.parent / "README.md"


def _first_python_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    return blocks[0]


def test_readme_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("Conv", ["input", "W"], ["c"], strides=[4, 4]),
                           helper.make_node("Relu", ["c"], ["output"])], "readme",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "model.onnx"))
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(_first_python_block(), "README.md", "exec"), scope)  # our own README, not user input
    assert (tmp_path / "model.tkengine").is_file()
    out = scope["out"]
    assert isinstance(out, dict) and out["output"].shape == (1, 4, 56, 56)
