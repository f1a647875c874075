"""Helpers for the serving benchmarks: model repositories for zoo or synthetic models."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def synthetic_model() -> onnx.ModelProto:
    """A conv stack of about 1 GFLOP per image: x [N,3,128,128] -> 4 convs (32 ch) -> pool -> [N,32]."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, cin = [], [], "x", 3
    for k in range(4):
        w = (rng.standard_normal((32, cin, 3, 3)) * 0.1).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        nodes += [helper.make_node("Conv", [prev, f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"])]
        prev, cin = f"r{k}", 32
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    g = helper.make_graph(nodes, "synthetic", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              ["N", 3, 128, 128])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def model_source(name: str, cache: Path) -> tuple[Path, dict[str, np.ndarray], dict[str, str]]:
    """(onnx path, batch-1 inputs, datatypes) for a zoo model, 'synthetic' or 'tiny' (one small MatMul:
    the serving path's own cost)."""
    if name == "tiny":
        p = cache / "tiny.onnx"
        w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "w")
        g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], initializer=[w])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
        return p, {"x": np.ones((1, 16), np.float32)}, {"x": "FP32"}
    if name == "synthetic":
        p = cache / "synthetic.onnx"
        if not p.exists():
            onnx.save(synthetic_model(), str(p))
        x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
        return p, {"x": x}, {"x": "FP32"}
    from tensorkiln import zoo

    feeds = zoo.sample_inputs(name, batch=1)
    dts = {k: {"float32": "FP32", "int64": "INT64", "int32": "INT32"}[str(v.dtype)] for k, v in feeds.items()}
    return Path(zoo.get(name)), feeds, dts


def add_model(root: Path, name: str, source: Path, config: str) -> None:
    d = root / name / "1"
    d.mkdir(parents=True, exist_ok=True)
    dst = d / "model.onnx"
    if not dst.exists():
        try:
            os.link(source, dst)  # the repository refuses symlinks that leave it; a hard link is inside
        except OSError:
            shutil.copyfile(source, dst)
    (root / name / "config.pbtxt").write_text(config)


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()
