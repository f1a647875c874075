"""Pooling kernels against onnxruntime on small random tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import tensorkiln

ort = pytest.importorskip("onnxruntime")

Inputs = list[tuple[str, np.ndarray | None]]


def single_node(op: str, inputs: Inputs, attrs: dict[str, Any] | None = None, opset: int = 17,
                n_out: int = 1, consts: tuple[str, ...] = ()) -> onnx.ModelProto:
    node = helper.make_node(op, [n if a is not None else "" for n, a in inputs],
                            [f"y{i}" for i in range(n_out)], **(attrs or {}))
    g_in = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in inputs if a is not None and n not in consts]
    inits = [numpy_helper.from_array(a, n) for n, a in inputs if a is not None and n in consts]
    g_out = [helper.make_empty_tensor_value_info(f"y{i}") for i in range(n_out)]
    graph = helper.make_graph([node], op.lower(), g_in, g_out, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def compare(op: str, inputs: Inputs, attrs: dict[str, Any] | None = None, opset: int = 17,
            n_out: int = 1, rtol: float = 1e-5, atol: float = 1e-6) -> list[np.ndarray]:
    """The node through tensorkiln (no graph passes) and onnxruntime; outputs must agree."""
    model = single_node(op, inputs, attrs, opset, n_out)
    feeds = {n: a for n, a in inputs if a is not None}
    got = tensorkiln.build(model, optimize=False).run(feeds)
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, feeds)
    for i, r in enumerate(ref):
        g = got[f"y{i}"]
        assert g.dtype == r.dtype, f"output {i}: dtype {g.dtype} != {r.dtype}"
        assert g.shape == r.shape, f"output {i}: shape {g.shape} != {r.shape}"
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=f"output {i}")
    return [got[f"y{i}"] for i in range(n_out)]


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


POOL_CASES: list[tuple[tuple[int, ...], dict[str, Any]]] = [
    ((1, 2, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((2, 3, 9, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 2, 9, 7), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [0, 1, 2, 0]}),  # asymmetric
    ((1, 2, 10, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 2, 9, 9), {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "pads": [2, 1, 2, 1]}),  # pad > half kernel
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 7, 8), {"kernel_shape": [2, 2], "strides": [2, 3], "auto_pad": "SAME_LOWER"}),
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 1], "auto_pad": "VALID"}),
    ((2, 3, 11), {"kernel_shape": [3], "strides": [2], "pads": [1, 2]}),  # 1D
    ((1, 2, 5, 6, 7), {"kernel_shape": [2, 3, 2], "strides": [1, 2, 2], "pads": [0, 1, 1, 1, 0, 0]}),
]


@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_maxpool(case: int) -> None:
    shape, attrs = POOL_CASES[case]
    compare("MaxPool", [("x", rand(*shape))], attrs, n_out=2)


@pytest.mark.parametrize("case", range(len(POOL_CASES)))
@pytest.mark.parametrize("incl", [0, 1])
def test_averagepool(case: int, incl: int) -> None:
    shape, attrs = POOL_CASES[case]
    compare("AveragePool", [("x", rand(*shape))], {**attrs, "count_include_pad": incl})


@pytest.mark.parametrize("incl", [0, 1])
@pytest.mark.parametrize("ceil", [0, 1])
def test_pools_with_dilations(incl: int, ceil: int) -> None:
    x = rand(1, 2, 11, 10)
    attrs = {"kernel_shape": [3, 2], "strides": [2, 2], "dilations": [2, 3], "pads": [1, 0, 2, 1],
             "ceil_mode": ceil}
    compare("MaxPool", [("x", x)], attrs, n_out=2)
    compare("AveragePool", [("x", x)], {**attrs, "count_include_pad": incl}, opset=19)


@pytest.mark.parametrize("order", [0, 1])
def test_maxpool_indices_storage_order(order: int) -> None:
    x = rand(2, 3, 7, 6)
    compare("MaxPool", [("x", x)], {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1],
                                    "storage_order": order}, n_out=2)
    compare("MaxPool", [("x", x)], {"kernel_shape": [2, 2], "storage_order": order}, n_out=2)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_maxpool_integer(dtype: Any) -> None:
    x = np.random.default_rng(0).integers(np.iinfo(dtype).min, np.iinfo(dtype).max, (1, 2, 7, 7))
    x = x.astype(dtype)
    compare("MaxPool", [("x", x)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})
    compare("MaxPool", [("x", x)], {"kernel_shape": [2, 2], "pads": [0, 0, 1, 1], "ceil_mode": 1})


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("case", [0, 1, 2, 3, 6, 9])
def test_lppool(case: int, p: int) -> None:
    shape, attrs = POOL_CASES[case]
    compare("LpPool", [("x", rand(*shape))], {**attrs, "p": p}, opset=18, rtol=1e-4)


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 4, 5)])
def test_global_pools(shape: tuple[int, ...]) -> None:
    x = rand(*shape)
    compare("GlobalAveragePool", [("x", x)])
    compare("GlobalMaxPool", [("x", x)])
    compare("GlobalLpPool", [("x", x)], {"p": 3}, rtol=1e-4)
    compare("GlobalLpPool", [("x", x)])


@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (2, 3, 7, 9)])
def test_maxunpool_roundtrip(shape: tuple[int, ...]) -> None:
    x = rand(*shape)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    pool = single_node("MaxPool", [("x", x)], attrs, n_out=2)
    y, idx = tensorkiln.build(pool, optimize=False).run({"x": x}).values()
    if shape[2] % 2 == 0 and shape[3] % 2 == 0:
        compare("MaxUnpool", [("y", y), ("i", idx)], attrs)
    # indices index the flattened output of the given shape (as onnxruntime does)
    out = compare("MaxUnpool", [("y", y), ("i", idx), ("s", np.array(x.shape, np.int64))], attrs)[0]
    np.testing.assert_array_equal(out[out != 0], x[out != 0])
