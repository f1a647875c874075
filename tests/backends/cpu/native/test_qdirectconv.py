"""Direct NHWC int8 convolution (uint8 x int8 on AVX2): exact integer sums, requantization."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import qdirectconv

_WHY = native.why_unavailable("qdirectconv") or "this CPU has no AVX2"
pytestmark = pytest.mark.skipif(not qdirectconv.available(), reason=f"int8 direct conv unavailable: {_WHY}")

CL = torch.channels_last

# n, c, h, w, k, kernel, stride, pads (t, l, b, r), dilation
SHAPES = [
    (1, 3, 17, 19, 20, 3, 1, (1, 1, 1, 1), 1),  # C % 4 != 0 (padded), K not a multiple of 16
    (2, 8, 9, 7, 33, 3, 2, (1, 1, 1, 1), 1),  # stride 2, tiles across rows and images
    (1, 64, 14, 14, 64, 1, 1, (0, 0, 0, 0), 1),
    (1, 12, 11, 13, 16, 5, 2, (2, 2, 2, 2), 2),  # dilation
    (1, 16, 8, 8, 8, 1, 2, (0, 0, 0, 0), 1),  # 1x1 stride 2, K < 16
    (2, 3, 30, 30, 64, 7, 2, (3, 3, 3, 3), 1),  # a stem
    (2, 20, 5, 6, 13, 3, 1, (2, 0, 1, 2), 1),  # asymmetric pads, wider than the kernel
    (1, 40, 7, 7, 24, 3, 1, (1, 1, 1, 1), 1),  # few tiles: output blocks split across threads
]


def _data(n: int, c: int, h: int, w: int, k: int, r: int, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray,
                                                                             np.ndarray]:
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)).contiguous(memory_format=CL)
    qw = rng.integers(-64, 65, (k, c, r, r)).astype(np.int8)  # the full 7-bit range, both extremes
    ws = (rng.random(k) + 0.5).astype(np.float32) / (c * r * r * 40)
    b = rng.standard_normal(k).astype(np.float32)
    return x, qw, ws, b


def _real(x: torch.Tensor, qw: np.ndarray, ws: np.ndarray, b: np.ndarray, xs: float, xz: int, s: int,
          pads: tuple[int, ...], d: int) -> torch.Tensor:
    """float64 reference of the convolution in real units (padding is the real value 0)."""
    t, left, bot, right = pads
    xr = F.pad(x.double() - xz, (left, right, t, bot))
    acc = F.conv2d(xr, torch.from_numpy(qw).double(), None, s, 0, d)  # exact integer sums
    return acc * (xs * torch.from_numpy(ws).double()).view(1, -1, 1, 1) + torch.from_numpy(b).double().view(1, -1, 1, 1)


def _act(y: torch.Tensor, act: str, params: list[float]) -> torch.Tensor:
    return y.relu() if act == "Relu" else y.clamp(*params) if act == "Clip" else y


def _requant(y: torch.Tensor, ys: float, yz: int) -> torch.Tensor:
    return torch.clamp(torch.round(y / ys) + yz, 0, 255)  # torch.round: half to even, as ONNX


def _assert_codes(got: torch.Tensor, want: torch.Tensor) -> None:
    """float32 vs float64 arithmetic may round a value within 1e-6 of a .5 boundary differently."""
    diff = (got.double() - want).abs()
    assert float(diff.max()) <= 1, float(diff.max())
    assert float((diff > 0).double().mean()) < 0.002


@pytest.mark.parametrize(("n", "c", "h", "w", "k", "r", "s", "pads", "d"), SHAPES)
@pytest.mark.parametrize(("act", "params"), [("", []), ("Relu", []), ("Clip", [-0.3, 0.4])])
def test_uint8_output_matches_float64_reference(n: int, c: int, h: int, w: int, k: int, r: int, s: int,
                                                pads: tuple[int, ...], d: int, act: str, params: list[float]) -> None:
    x, qw, ws, b = _data(n, c, h, w, k, r, c * k + h)
    xs, xz, ys, yz = 0.02, 7, 0.01, 100
    conv = qdirectconv.QDirectConv(qw, ws, b, xs, xz, [s, s], list(pads), [d, d], act, params, True, ys, yz)
    y = conv(x)
    want = _requant(_act(_real(x, qw, ws, b, xs, xz, s, pads, d), act, params), ys, yz)
    assert y.dtype == torch.uint8 and y.shape == want.shape and y.is_contiguous(memory_format=CL)
    assert 0 < float((want > 0).double().mean()) and float((want < 255).double().mean()) > 0.5  # not all clipped
    _assert_codes(y, want)


@pytest.mark.parametrize(("n", "c", "h", "w", "k", "r", "s", "pads", "d"), SHAPES[:4])
@pytest.mark.parametrize("act", ["", "Relu"])
def test_float_output_and_residuals(n: int, c: int, h: int, w: int, k: int, r: int, s: int,
                                    pads: tuple[int, ...], d: int, act: str) -> None:
    x, qw, ws, b = _data(n, c, h, w, k, r, c + k)
    xs, xz = 0.03, 128
    real = _real(x, qw, ws, b, xs, xz, s, pads, d)
    rng = np.random.default_rng(5)
    zf = torch.from_numpy(rng.standard_normal(tuple(real.shape)).astype(np.float32)).contiguous(memory_format=CL)
    conv = qdirectconv.QDirectConv(qw, ws, b, xs, xz, [s, s], list(pads), [d, d], act, [], False)
    want = _act(real, act, [])
    assert torch.allclose(conv(x).double(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    for inplace in (False, True):  # float32 residual, float32 output
        conv = qdirectconv.QDirectConv(qw, ws, b, xs, xz, [s, s], list(pads), [d, d], act, [], False, inplace=inplace)
        z = zf.clone(memory_format=CL)
        want = _act(real + zf.double(), act, [])
        y = conv(x, z)
        assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        assert (y.data_ptr() == z.data_ptr()) == inplace
    # uint8 residual, uint8 output (a ResNet block's sum), in place and not
    zs, zz, ys, yz = 0.05, 9, 0.04, 3
    zq = torch.from_numpy(rng.integers(0, 256, tuple(real.shape), dtype=np.uint8)).contiguous(memory_format=CL)
    want = _requant(_act(real + (zq.double() - zz) * zs, act, []), ys, yz)
    for inplace in (False, True):
        conv = qdirectconv.QDirectConv(qw, ws, b, xs, xz, [s, s], list(pads), [d, d], act, [], True, ys, yz,
                                       z_u8=True, z_scale=zs, z_zp=zz, inplace=inplace)
        z = zq.clone(memory_format=CL)
        y = conv(x, z)
        _assert_codes(y, want)
        assert (y.data_ptr() == z.data_ptr()) == inplace


def test_reads_a_channel_slice_in_place() -> None:
    x, qw, ws, b = _data(1, 24, 9, 9, 16, 3, 3)
    wide = torch.cat([x, x[:, :8]], dim=1).contiguous(memory_format=CL)  # 32 channels
    part = wide[:, 8:24]  # a slice starting at an 8-byte offset, pixel stride 32
    conv = qdirectconv.QDirectConv(qw[:, :16], ws, b, 0.02, 5, [1, 1], [1, 1, 1, 1], [1, 1], "", [], True, 0.02, 128)
    want = _requant(_real(part.contiguous(), qw[:, :16], ws, b, 0.02, 5, 1, (1, 1, 1, 1), 1), 0.02, 128)
    _assert_codes(conv(part), want)


def test_rejects_what_it_cannot_compute() -> None:
    x, qw, ws, b = _data(1, 8, 6, 6, 16, 3, 1)
    with pytest.raises(ValueError, match="7 bits"):
        qdirectconv.QDirectConv(qw * 0 + 65, ws, b, 0.1, 0, [1, 1], [0] * 4, [1, 1], "", [], True, 0.1, 0)
    with pytest.raises(ValueError, match="activation"):
        qdirectconv.QDirectConv(qw, ws, b, 0.1, 0, [1, 1], [0] * 4, [1, 1], "Sigmoid", [], True, 0.1, 0)
    conv = qdirectconv.QDirectConv(qw, ws, b, 0.1, 0, [1, 1], [0] * 4, [1, 1], "", [], True, 0.1, 0)
    with pytest.raises(ValueError, match="input channels"):
        conv(torch.zeros(1, 9, 6, 6, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8 input"):
        conv(torch.zeros(1, 8, 6, 6))
    with pytest.raises(ValueError, match="no output"):
        conv(torch.zeros(1, 8, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="residual"):
        conv(x, torch.zeros(1, 16, 3, 3, dtype=torch.uint8))


@pytest.mark.parametrize("shape", [(1, 32, 1, 1), (3, 32, 1, 1), (2, 32, 5, 1), (1, 3, 1, 1)])
def test_size_one_spatial_dims_with_any_strides(shape: tuple[int, ...]) -> None:
    """Inputs whose size-1 dimensions carry arbitrary strides (as PyTorch leaves them), and a
    3-channel input padded per call, run on the right numbers (the per-layout cache keys on them)."""
    rng = np.random.default_rng(shape[1])
    qw = rng.integers(-64, 65, (16, shape[1], 1, 1)).astype(np.int8)
    ws = (rng.random(16) + 0.5).astype(np.float32) / 400
    b = rng.standard_normal(16).astype(np.float32)
    conv = qdirectconv.QDirectConv(qw, ws, b, 0.02, 3, [1, 1], [0] * 4, [1, 1], "Relu", [], True, 0.01, 0)
    base = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))
    for x in (base, base.contiguous(memory_format=CL), base.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)):
        for _ in range(2):  # the second call takes the cached layout
            want = _requant(_act(_real(x, qw, ws, b, 0.02, 3, 1, (0, 0, 0, 0), 1), "Relu", []), 0.01, 0)
            _assert_codes(conv(x), want)


@pytest.mark.parametrize(("n", "c", "h", "w", "k", "r", "s", "pads", "d"), [
    (2, 3, 30, 30, 64, 7, 2, (3, 3, 3, 3), 1),  # a stem: 8-byte tap rows inside, byte-wise at the edges
    (1, 3, 11, 13, 20, 3, 1, (1, 1, 1, 1), 1),  # 3x3: rows copied 8 bytes (5 spill into the next rows)
    (1, 5, 9, 8, 16, 3, 2, (0, 1, 2, 1), 2),  # dilation (byte-wise), asymmetric pads
    (1, 8, 6, 6, 17, 2, 1, (0, 0, 0, 0), 1),  # 32 patch bytes: no rounding up
])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_im2col_equals_the_direct_kernel(n: int, c: int, h: int, w: int, k: int, r: int, s: int,
                                         pads: tuple[int, ...], d: int, layout: str) -> None:
    x, qw, ws, b = _data(n, c, h, w, k, r, 3 * c + h)
    x = x.contiguous() if layout == "nchw" else x
    args = (qw, ws, b, 0.02, 7, [s, s], list(pads), [d, d], "Relu", [], True, 0.01, 100)
    want = qdirectconv.QDirectConv(*args)(x)  # same integer sums, same epilogue
    im = qdirectconv.QIm2ColConv(*args)
    for _ in range(2):  # the cached layout
        y = im(x)
        assert y.shape == want.shape and y.is_contiguous(memory_format=CL) and torch.equal(y, want)
    z = torch.from_numpy(np.random.default_rng(0).integers(0, 256, want.shape, dtype=np.uint8))
    with_z = qdirectconv.QIm2ColConv(*args, z_u8=True, z_scale=0.03, z_zp=5)
    ref = qdirectconv.QDirectConv(*args, z_u8=True, z_scale=0.03, z_zp=5)
    assert torch.equal(with_z(x, z.contiguous(memory_format=CL)), ref(x, z.contiguous(memory_format=CL)))
