"""Channel concatenation of channels-last tensors (concat.c) against torch.cat."""

from __future__ import annotations

import pytest
import torch

from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import chain as native_chain
from tensorkiln.backends.cpu.native import concat

pytestmark = pytest.mark.skipif(concat.library() is None,
                                reason=f"native kernels unavailable: {native.why_unavailable('concat')}")
CL = torch.channels_last


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
@pytest.mark.parametrize("n", [1, 3])
def test_matches_torch_cat(dtype: torch.dtype, n: int) -> None:
    g = torch.Generator().manual_seed(n)
    wide = (torch.rand(n, 40, 5, 7, generator=g) * 200).to(dtype).contiguous(memory_format=CL)
    xs = (wide[:, 3:11], (torch.rand(n, 5, 5, 7, generator=g) * 200).to(dtype).contiguous(memory_format=CL),
          wide[:, 20:40], (torch.rand(n, 1, 5, 7, generator=g) * 200).to(dtype).contiguous(memory_format=CL))
    call = concat.concat_channels_plan(xs)
    assert call is not None
    y = native_chain.run(call)
    assert y.is_contiguous(memory_format=CL) and y.dtype == dtype
    assert torch.equal(y, torch.cat(xs, dim=1))


def test_declines_what_it_cannot_copy() -> None:
    x = torch.rand(1, 4, 3, 3).contiguous(memory_format=CL)
    assert concat.concat_channels_plan((x, torch.rand(1, 4, 3, 3))) is None  # NCHW: not NHWC-strided
    assert concat.concat_channels_plan((x, x.double())) is None  # mixed types
    assert concat.concat_channels_plan((x, torch.rand(1, 4, 3, 2).contiguous(memory_format=CL))) is None
    assert concat.concat_channels_plan((x,) * 9) is None  # more inputs than the kernel takes
    assert concat.concat_channels_plan((x,)) is None
