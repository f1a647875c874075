"""Pooling kernels against onnxruntime on small random tensors."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest

import tensorkiln
from tests.backends.cpu import util
from tests.backends.cpu.util import rand, single_node

ort = pytest.importorskip("onnxruntime")

compare = partial(util.compare, rtol=1e-5, atol=1e-6)


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


@pytest.mark.parametrize("case", [i for i, (shape, _) in enumerate(POOL_CASES) if len(shape) == 4])
def test_maxpool_many_channels(case: int) -> None:
    """32 channels and a large plane: the kernel converts to channels-last and (with a C
    compiler) runs the native NHWC max pool; one output (no indices) so that path is taken."""
    shape, attrs = POOL_CASES[case]
    compare("MaxPool", [("x", rand(shape[0], 32, shape[2] * 4, shape[3] * 4))], attrs)


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
