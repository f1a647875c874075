"""A model repository of small models and a server on ephemeral loopback ports, shared by the
serving tests. Skips (with the reason) when the `serve` extra is not installed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tritonclient.grpc", reason="serving tests need the serve/dev extra (tritonclient[http,grpc])")
pytest.importorskip("starlette", reason="serving tests need the serve extra")
pytest.importorskip("uvicorn", reason="serving tests need the serve extra")

from tests.helpers import tiny_model

# protocol datatype -> (ONNX element type, numpy dtype)
DATATYPES = {
    "BOOL": (TensorProto.BOOL, np.bool_), "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16), "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64), "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16), "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64), "FP16": (TensorProto.FLOAT16, np.float16),
    "BF16": (TensorProto.BFLOAT16, None), "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64), "BYTES": (TensorProto.STRING, np.object_),
}


def _model(nodes: list, inputs: list, outputs: list, inits: list | None = None) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits or [])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def identity_model(types: list[str]) -> onnx.ModelProto:
    """One Identity per datatype: in_<T> [batch, 3] -> out_<T>."""
    ins, outs, nodes = [], [], []
    for t in types:
        et = DATATYPES[t][0]
        ins.append(helper.make_tensor_value_info(f"in_{t}", et, ["batch", 3]))
        outs.append(helper.make_tensor_value_info(f"out_{t}", et, ["batch", 3]))
        nodes.append(helper.make_node("Identity", [f"in_{t}"], [f"out_{t}"]))
    return _model(nodes, ins, outs)


def conv_model() -> onnx.ModelProto:
    """A tiny conv net with free spatial dims: x [N,3,H,W] -> conv3x3 -> relu -> global avg pool -> [N,4]."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                  [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])


def fixed_model() -> onnx.ModelProto:
    """No batch dim: x [2, 2] -> y = x * 2 (max_batch_size 0)."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    return _model([helper.make_node("Mul", ["x", "two"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [two])


def write_model(root: Path, name: str, model: onnx.ModelProto, config: str | None = None,
                versions: tuple[int, ...] = (1,)) -> None:
    for v in versions:
        d = root / name / str(v)
        d.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(d / "model.onnx"))
    if config is not None:
        (root / name / "config.pbtxt").write_text(config)


NUMERIC = [t for t in DATATYPES if t != "BYTES"]


def make_repository(root: Path) -> Path:
    write_model(root, "tiny", tiny_model(), """
        max_batch_size: 8
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
        dynamic_batching { max_queue_delay_microseconds: 1000 }
        version_policy: { all { } }
        """, versions=(1, 2))
    write_model(root, "auto", tiny_model())  # no config.pbtxt: derived from the model
    write_model(root, "alltypes", identity_model(NUMERIC), "max_batch_size: 8\ndynamic_batching { }\n")
    write_model(root, "bytes", identity_model(["BYTES"]), "max_batch_size: 8\n")
    write_model(root, "conv", conv_model(), """
        max_batch_size: 8
        dynamic_batching { max_queue_delay_microseconds: 2000 }
        instance_group [ { count: 2 kind: KIND_CPU } ]
        """)
    write_model(root, "fixed", fixed_model(), "max_batch_size: 0\n")
    write_model(root, "padded", tiny_model(), """
        max_batch_size: 8
        dynamic_batching { }
        parameters { key: "tensorkiln_pad_batch" value { string_value: "auto" } }
        """)
    from tensorkiln import build

    (root / "engine" / "3").mkdir(parents=True)
    build(tiny_model()).save(str(root / "engine" / "3" / "model.tkengine"))  # a prebuilt engine file
    return root


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="session")
def server(repository: Path):
    from tensorkiln.serve import Server

    s = Server(str(repository), http_port=0, grpc_port=0, max_body_bytes=8 << 20,
               max_tensor_bytes=8 << 20).start(timeout=300)
    yield s
    s.stop()


@pytest.fixture()
def http(server):
    import tritonclient.http as th

    c = th.InferenceServerClient(server.http_url)
    yield c
    c.close()


@pytest.fixture()
def grpc_client(server):
    import tritonclient.grpc as tg

    c = tg.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


def sample(datatype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if datatype == "BOOL":
        return rng.random(shape) > 0.5
    if datatype == "BYTES":
        return np.array([f"s{i}-é".encode() for i in range(int(np.prod(shape)))], dtype=object).reshape(shape)
    if datatype == "BF16":
        import ml_dtypes

        return rng.standard_normal(shape).astype(ml_dtypes.bfloat16)
    npdt = np.dtype(DATATYPES[datatype][1])
    if npdt.kind == "f":
        return rng.standard_normal(shape).astype(npdt)
    info = np.iinfo(npdt)
    return rng.integers(info.min, info.max, size=shape, dtype=npdt, endpoint=True)


PERF_ANALYZER = os.environ.get("TENSORKILN_PERF_ANALYZER", "")
