"""Conv / ConvTranspose / LRN kernels against onnxruntime on small random tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tensorkiln
from tests.backends.cpu.util import Inputs, compare, rand, single_node

ort = pytest.importorskip("onnxruntime")

CONV_CASES = [
    # (x shape, w shape, attrs)
    ((1, 4, 9, 9), (6, 4, 3, 3), {}),
    ((2, 4, 9, 9), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    ((1, 6, 8, 8), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1], "strides": [2, 2]}),  # depthwise
    ((1, 3, 10, 9), (4, 3, 3, 2), {"pads": [0, 1, 2, 0]}),  # asymmetric
    ((1, 3, 11, 11), (4, 3, 3, 3), {"dilations": [2, 3], "pads": [2, 1, 2, 3]}),
    ((1, 3, 7, 8), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 3, 7, 8), (4, 3, 4, 4), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ((1, 3, 7, 8), (4, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 1]}),
    ((2, 3, 20), (5, 3, 4), {"pads": [2, 1], "strides": [3]}),  # 1D
    ((1, 2, 5, 6, 7), (4, 2, 3, 2, 3), {"pads": [1, 0, 1, 0, 1, 2], "strides": [1, 2, 2]}),  # 3D
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv(case: int, bias: bool) -> None:
    xs, ws, attrs = CONV_CASES[case]
    inputs: Inputs = [("x", rand(*xs)), ("w", rand(*ws, seed=1)),
                      ("b", rand(ws[0], seed=2) if bias else None)]
    compare("Conv", inputs, attrs, consts=("w", "b"))


def test_conv_same_with_dilations() -> None:
    # onnxruntime refuses auto_pad SAME with dilations; the ONNX reference computes it
    inputs: Inputs = [("x", rand(1, 3, 7, 8)), ("w", rand(4, 3, 2, 3, seed=1))]
    for mode in ("SAME_UPPER", "SAME_LOWER"):
        compare("Conv", inputs, {"auto_pad": mode, "dilations": [2, 2], "strides": [1, 2]},
                consts=("w",), oracle="ref")


def test_conv_weight_as_input_and_kernel_shape() -> None:
    inputs: Inputs = [("x", rand(1, 3, 8, 8)), ("w", rand(4, 3, 3, 3, seed=1))]
    compare("Conv", inputs, {"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER"})
    compare("Conv", inputs, {"pads": [1, 0, 0, 1]}, opset=11)


def test_conv_float16_matches_float32() -> None:
    x, w, b = rand(1, 4, 8, 8), rand(5, 4, 3, 3, seed=1), rand(5, seed=2)
    attrs = {"pads": [1, 0, 1, 2], "strides": [2, 1]}
    ref = compare("Conv", [("x", x), ("w", w), ("b", b)], attrs, consts=("w", "b"))[0]
    model = single_node("Conv", [("x", x.astype(np.float16)), ("w", w.astype(np.float16)),
                                 ("b", b.astype(np.float16))], attrs, consts=("w", "b"))
    got = tensorkiln.build(model, optimize=False).run({"x": x.astype(np.float16)})["y0"]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), ref, rtol=2e-2, atol=2e-2)


def test_conv_does_not_modify_input() -> None:
    x = rand(1, 3, 6, 6)
    model = single_node("Conv", [("x", x), ("w", rand(2, 3, 3, 3, seed=1))],
                        {"pads": [0, 1, 1, 0]}, consts=("w",))
    keep = x.copy()
    tensorkiln.build(model, optimize=False).run({"x": x})
    np.testing.assert_array_equal(x, keep)


CONVT_CASES = [
    ((1, 3, 4, 4), (3, 2, 3, 3), {}),
    ((1, 3, 4, 5), (3, 2, 3, 3), {"strides": [2, 2], "output_padding": [1, 1]}),
    ((1, 4, 4, 4), (4, 3, 3, 3), {"group": 2, "strides": [2, 1], "pads": [1, 0, 1, 0]}),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "pads": [0, 1, 2, 0]}),  # asymmetric
    ((1, 3, 4, 4), (3, 2, 2, 3), {"dilations": [2, 2], "strides": [2, 3], "pads": [1, 1, 1, 1]}),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [8, 7]}),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "output_padding": [1, 0],
                                   "pads": [2, 0, 0, 1]}),
    ((2, 2, 7), (2, 3, 3), {"strides": [2], "pads": [1, 2]}),  # 1D
    ((1, 2, 3, 3, 3), (2, 2, 2, 2, 2), {"strides": [2, 1, 2]}),  # 3D
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", range(len(CONVT_CASES)))
def test_conv_transpose(case: int, bias: bool) -> None:
    xs, ws, attrs = CONVT_CASES[case]
    m = ws[1] * attrs.get("group", 1)
    inputs: Inputs = [("x", rand(*xs)), ("w", rand(*ws, seed=1)), ("b", rand(m, seed=2) if bias else None)]
    compare("ConvTranspose", inputs, attrs, consts=("w", "b"))


@pytest.mark.parametrize("with_mask", [True, False])
@pytest.mark.parametrize("attrs", [
    {},
    {"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2]},
    {"group": 2, "offset_group": 2, "pads": [1, 1, 1, 1]},
])
def test_deform_conv(attrs: dict[str, Any], with_mask: bool) -> None:
    x, w = rand(2, 4, 6, 7), rand(6, 4 // attrs.get("group", 1), 3, 2, seed=1)
    s, d, p = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1]), attrs.get("pads", [0] * 4)
    oh = (6 + p[0] + p[2] - (d[0] * 2 + 1)) // s[0] + 1
    ow = (7 + p[1] + p[3] - (d[1] * 1 + 1)) // s[1] + 1
    og = attrs.get("offset_group", 1)
    offset = rand(2, og * 2 * 6, oh, ow, seed=3) * 1.5  # some taps land outside the input
    mask = np.abs(rand(2, og * 6, oh, ow, seed=4)) if with_mask else None
    compare("DeformConv", [("x", x), ("w", w), ("o", offset), ("b", rand(6, seed=2)), ("m", mask)],
            attrs, opset=19)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn(size: int) -> None:
    compare("LRN", [("x", rand(2, 7, 3, 4))], {"size": size, "alpha": 0.01, "beta": 0.6, "bias": 1.5})


@pytest.mark.parametrize("size", [2, 4])
def test_lrn_even_size(size: int) -> None:
    # onnxruntime takes odd sizes only; ONNX sums channels [c - floor((size-1)/2), c + ceil((size-1)/2)]
    x = rand(2, 7, 3, 4)
    alpha, beta, bias = 0.01, 0.6, 1.5
    sq = np.zeros_like(x)
    for c in range(x.shape[1]):
        lo, hi = max(0, c - (size - 1) // 2), min(x.shape[1], c + size // 2 + 1)
        sq[:, c] = (x[:, lo:hi] ** 2).sum(axis=1)
    want = x / (bias + alpha / size * sq) ** beta
    model = single_node("LRN", [("x", x)], {"size": size, "alpha": alpha, "beta": beta, "bias": bias})
    got = tensorkiln.build(model, optimize=False).run({"x": x})["y0"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
