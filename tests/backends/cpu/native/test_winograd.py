"""Winograd F(4x4, 3x3) against ATen's direct convolution, over the shapes that stress the tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import winograd

pytestmark = pytest.mark.skipif(not winograd.available(),
                                reason=f"native Winograd kernels unavailable: {native.why_unavailable('winograd')}")


def _reference(x: torch.Tensor, w: np.ndarray, b: np.ndarray | None, pads: list[int], z: torch.Tensor | None,
               act: str, params: list[float]) -> torch.Tensor:
    pt, pl, pb, pr = pads
    xp = F.pad(x.double(), (pl, pr, pt, pb))
    y = F.conv2d(xp, torch.from_numpy(w).double(), None if b is None else torch.from_numpy(b).double())
    if z is not None:
        y = y + z.double()
    if act == "Relu":
        y = y.relu()
    elif act == "Clip":
        y = y.clamp(params[0], params[1])
    return y


@pytest.mark.parametrize(("n", "c", "k", "h", "w", "pads"), [
    (1, 64, 64, 14, 14, [1, 1, 1, 1]),   # a ResNet layer
    (2, 3, 5, 7, 9, [1, 1, 1, 1]),       # sizes not multiples of 4, channels below a vector
    (1, 70, 130, 13, 6, [1, 1, 1, 1]),   # channel counts across the 64-channel blocks
    (3, 8, 8, 1, 1, [1, 1, 1, 1]),       # one pixel: one tile, almost all padding
    (1, 16, 24, 9, 11, [0, 0, 0, 0]),    # no padding (output smaller than the input)
    (1, 16, 24, 8, 8, [2, 2, 2, 2]),     # wide padding
    (2, 12, 20, 10, 7, [0, 1, 2, 1]),    # asymmetric padding
    (1, 8, 8, 300, 9, [1, 1, 1, 1]),     # a tall image: 225 tiles
])
@pytest.mark.parametrize(("act", "params"), [("", []), ("Relu", []), ("Clip", [-0.5, 0.7])])
def test_matches_direct_convolution(n: int, c: int, k: int, h: int, w: int, pads: list[int], act: str,
                                    params: list[float]) -> None:
    rng = np.random.default_rng(n * 1000 + c + k + h + w)
    wt = rng.standard_normal((k, c, 3, 3)).astype(np.float32) / np.sqrt(9 * c)
    bias = rng.standard_normal(k).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((n, c, h, w)).astype(np.float32)).contiguous(
        memory_format=torch.channels_last)
    ho, wo = h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2
    z = torch.from_numpy(rng.standard_normal((n, k, ho, wo)).astype(np.float32))
    small = 36 * 4 * max(c, k) * 8  # 8 tiles per chunk: several chunks and a partial last one
    for conv, zz in [(winograd.Wino43(wt, bias, pads, act, params), None),
                     (winograd.Wino43(wt, bias, pads, act, params), z),
                     (winograd.Wino43(wt, bias, pads, act, params, chunk_bytes=small), z)]:
        y = conv(x, zz)
        ref = _reference(x, wt, bias, pads, zz, act, params)
        scale = _reference(x, wt, bias, pads, zz, "", []).abs().max().item()  # before the activation clips it
        assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
        err = (y.double() - ref).abs().max().item()
        assert err <= 2e-5 * max(1.0, scale), f"max error {err} (output scale {scale})"


def test_no_bias_and_nchw_input() -> None:
    rng = np.random.default_rng(3)
    wt = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((1, 4, 5, 5)).astype(np.float32))  # plain NCHW: converted
    y = winograd.Wino43(wt, None, [1, 1, 1, 1], "", [])(x)
    ref = _reference(x, wt, None, [1, 1, 1, 1], None, "", [])
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-5, atol=1e-4)


def test_weight_transform_is_exact_for_a_delta() -> None:
    """U = G g G^T: a centre-tap kernel transforms to the outer product of G's middle column."""
    g = np.zeros((1, 1, 3, 3), np.float32)
    g[0, 0, 1, 1] = 1.0
    u = winograd.transform_weight(g).numpy().reshape(6, 6)
    col = np.array([0, -1 / 6, 1 / 6, 1 / 12, -1 / 12, 0])
    np.testing.assert_allclose(u, np.outer(col, col), rtol=1e-6, atol=1e-7)


def test_cached_library_is_private() -> None:
    cache = native._cache_dir()
    if cache is None:
        pytest.skip("no private cache directory here: the library was compiled into a temporary directory")
    libs = list(cache.glob("winograd-*.so"))
    assert libs and all(native._private(p) for p in libs)
