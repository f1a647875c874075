"""uint8 ⇄ float32 conversions and the uint8 global average pool in C (quant.c)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import chain, quant
from tensorkiln.backends.cpu.ops_int8 import dequantize_u8, quantize_u8

pytestmark = pytest.mark.skipif(not quant.available(), reason=f"quant.c unavailable: {native.why_unavailable('quant')}")
CL = torch.channels_last


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 64, 56, 56), (13,)])
@pytest.mark.parametrize("scale,zp", [(0.1, 3), (0.02, 128), (1.0, 0)])
def test_quantize_and_dequantize_give_the_torch_path_codes(shape: tuple[int, ...], scale: float, zp: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 200 * scale  # saturates at both ends
    x.view(-1)[:4] = torch.tensor([0.5, 1.5, -0.5, 2.5]) * scale  # ties: half to even
    for t in ([x, x.contiguous(memory_format=CL)] if x.dim() == 4 else [x]):
        q = chain.run(quant.quantize(t, scale, zp))
        assert torch.equal(q, quantize_u8(t, scale, zp)) and q.stride() == t.stride()
        d = chain.run(quant.dequantize(q, scale, zp))
        assert torch.equal(d, dequantize_u8(q, scale, zp)) and d.stride() == t.stride()


def test_conversions_refuse_what_they_cannot_take() -> None:
    x = torch.randn(2, 8, 4, 4)
    assert quant.quantize(x[:, ::2], 0.1, 0) is None  # not dense
    assert quant.quantize(x.double(), 0.1, 0) is None
    assert quant.dequantize(x, 0.1, 0) is None  # not uint8


@pytest.mark.parametrize("n,c,h,w", [(1, 2048, 7, 7), (2, 300, 3, 5), (1, 5, 1, 1)])
@pytest.mark.parametrize("out_u8", [True, False])
def test_global_average_pool_of_codes(n: int, c: int, h: int, w: int, out_u8: bool) -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)).contiguous(memory_format=CL)
    xs, xz, ys, yz = 0.05, 7, 0.03, 11
    m = float(np.float32(xs / (h * w * ys))) if out_u8 else float(np.float32(xs / (h * w)))
    y = chain.run(quant.global_avg_pool(x, xz, m, yz if out_u8 else 0, out_u8))
    real = (x.double() - xz).mul(xs).mean(dim=(2, 3), keepdim=True)  # DQ → mean
    if out_u8:
        want = (real / ys).round().add(yz).clamp(0, 255)
        assert y.dtype == torch.uint8 and y.shape == (n, c, 1, 1)
        assert float((y.double() - want).abs().max()) <= 1  # only a value on a rounding tie can differ
        assert float((y.double() - want).abs().mean()) < 0.01
    else:
        torch.testing.assert_close(y.double(), real, rtol=1e-6, atol=1e-6)
    if h * w > 1:
        assert quant.global_avg_pool(x.contiguous(), xz, m, yz, out_u8) is None  # NCHW: the torch path
