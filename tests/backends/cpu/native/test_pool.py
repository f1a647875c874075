"""The native NHWC max pool against ATen's, including windows clipped by padding and ceil mode."""

from __future__ import annotations

import pytest
import torch

from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import pool

pytestmark = pytest.mark.skipif(not pool.available(),
                                reason=f"native pool kernels unavailable: {native.why_unavailable('pool')}")


@pytest.mark.parametrize(("shape", "k", "s", "p", "d", "ceil"), [
    ((1, 64, 112, 112), 3, 2, 1, 1, False),   # ResNet stem
    ((2, 19, 15, 13), 3, 2, 0, 1, True),      # GoogLeNet-style ceil mode, odd channels
    ((1, 40, 9, 9), 3, 1, 1, 1, False),       # inception branch pool
    ((1, 8, 11, 10), 2, 2, 1, 2, True),       # dilation
    ((3, 5, 1, 1), 1, 1, 0, 1, False),        # 1x1 plane
    ((1, 77, 12, 12), 9, 1, 4, 1, False),     # 81 taps (more than one batch of 64), 2x32 + 8 + 5 channels
    ((1, 256, 7, 7), 3, 1, 1, 1, False),      # whole 32-channel blocks only
])
def test_matches_aten(shape: tuple[int, ...], k: int, s: int, p: int, d: int, ceil: bool) -> None:
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
    ref = torch.max_pool2d(x.contiguous(), k, s, p, d, ceil)
    y = pool.maxpool2d_nhwc(x, [k, k], [s, s], [p, p], [d, d], list(ref.shape[2:]))
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)


def test_window_entirely_in_padding_is_minus_infinity() -> None:
    x = torch.randn(1, 40, 2, 2).contiguous(memory_format=torch.channels_last)
    # pads of 3 around a 2x2 plane with a 2x2 stride-3 window: the first window covers only padding
    y = pool.maxpool2d_nhwc(x, [2, 2], [3, 3], [3, 3], [1, 1], [2, 2])
    assert torch.isneginf(y[0, :, 0, 0]).all()
    assert torch.equal(y[0, :, 1, 1], x[0, :, 0:2, 0:2].amax((1, 2)))


@pytest.mark.parametrize("shape", [(1, 2048, 7, 7), (2, 70, 13, 11), (1, 5, 112, 112)])
def test_global_average_pool_of_channels_last_floats(shape: tuple[int, ...]) -> None:
    from tensorkiln.backends.cpu.native import chain

    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    y = chain.run(pool.global_avg_pool_plan(x))
    assert y.shape == (shape[0], shape[1], 1, 1)
    torch.testing.assert_close(y.double(), x.double().mean((2, 3), keepdim=True), rtol=1e-6, atol=1e-6)
    assert pool.global_avg_pool_plan(torch.randn(shape)) is None or shape[2] * shape[3] == 1  # NCHW: ATen
