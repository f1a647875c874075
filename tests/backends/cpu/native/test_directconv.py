"""Direct NHWC convolution on AVX2 register tiles (any kernel, stride, dilation, padding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tensorkiln
from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import directconv
from tests.backends.cpu.native.test_gemm1x1 import _bottleneck
from tests.runtime.test_concurrency import conv_model

_AVAILABLE = directconv.available()
_WHY = native.why_unavailable("directconv") or "this CPU has no AVX2/FMA"
pytestmark = pytest.mark.skipif(not _AVAILABLE, reason=f"direct conv kernels unavailable: {_WHY}")

CL = torch.channels_last

# n, c, h, w, k, kernel, stride, pads (t, l, b, r), dilation
SHAPES = [
    (1, 3, 17, 19, 20, 3, 1, (1, 1, 1, 1), 1),  # K not a multiple of 16, odd sizes
    (2, 5, 9, 7, 33, 3, 2, (1, 1, 1, 1), 1),  # stride 2, tiles across rows and images
    (1, 64, 14, 14, 64, 1, 1, (0, 0, 0, 0), 1),
    (1, 7, 11, 13, 16, 5, 2, (2, 2, 2, 2), 2),  # dilation
    (1, 16, 8, 8, 8, 1, 2, (0, 0, 0, 0), 1),  # 1x1 stride 2, K < 16
    (3, 3, 30, 30, 64, 7, 2, (3, 3, 3, 3), 1),  # a stem
    (2, 9, 5, 6, 13, 3, 1, (2, 0, 1, 2), 1),  # asymmetric pads, wider than the kernel
    (1, 40, 7, 7, 24, 3, 1, (1, 1, 1, 1), 1),  # few tiles: output blocks split across threads
]


def _ref(x: torch.Tensor, w: np.ndarray, b: np.ndarray, stride: int, pads: tuple[int, ...], dil: int,
         z: torch.Tensor | None, act: str, params: list[float]) -> torch.Tensor:
    t, left, bot, right = pads
    xp = F.pad(x.double(), (left, right, t, bot))
    y = F.conv2d(xp, torch.from_numpy(w).double(), torch.from_numpy(b).double(), stride, 0, dil)
    y = y if z is None else y + z.double()
    return y.relu() if act == "Relu" else y.clamp(*params) if act == "Clip" else y


@pytest.mark.parametrize(("n", "c", "h", "w", "k", "r", "s", "pads", "d"), SHAPES)
@pytest.mark.parametrize(("act", "params"), [("", []), ("Relu", []), ("Clip", [-0.3, 0.4])])
@pytest.mark.parametrize(("cb", "kg"), [(None, None), (3, 1), (1000, 1000)])  # input blocks; group sizes
def test_matches_float64_convolution(n: int, c: int, h: int, w: int, k: int, r: int, s: int,
                                     pads: tuple[int, ...], d: int, act: str, params: list[float],
                                     cb: int | None, kg: int | None) -> None:
    rng = np.random.default_rng(c * k + h)
    wt = (rng.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((n, c, h, w)).astype(np.float32)).contiguous(memory_format=CL)
    conv = directconv.DirectConv(wt, bias, [s, s], list(pads), [d, d], act, params, cb=cb, kg=kg)
    want = _ref(x, wt, bias, s, pads, d, None, act, params)
    y = conv(x)
    assert y.shape == want.shape and y.is_contiguous(memory_format=CL)
    assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-5)
    z = torch.from_numpy(rng.standard_normal(tuple(want.shape)).astype(np.float32)).contiguous(memory_format=CL)
    for inplace in (False, True):
        conv.inplace = inplace
        zc = z.clone(memory_format=CL)
        y = conv(x, zc)
        assert torch.allclose(y.double(), _ref(x, wt, bias, s, pads, d, z, act, params), rtol=1e-5, atol=1e-5)
        # in place: the result is written into z's memory; otherwise z is untouched
        assert (y.data_ptr() == zc.data_ptr()) == inplace
        if not inplace:
            assert torch.equal(zc, z)


def test_weights_are_packed_in_blocks_of_16_output_channels() -> None:
    w = np.arange(20 * 3 * 2 * 2, dtype=np.float32).reshape(20, 3, 2, 2)
    packed, kp = directconv.pack_weight(w, 16)
    assert kp == 32 and packed.numel() == 32 * 3 * 2 * 2 and packed.data_ptr() % 32 == 0
    p = packed.reshape(2, 2, 2, 3, 16)  # [K/16][KH][KW][C][16]
    assert p[1, 0, 1, 2, 3].item() == w[19, 2, 0, 1]
    assert torch.count_nonzero(p[1, :, :, :, 4:]) == 0  # the padding filters are zero


def test_engine_with_every_conv_direct() -> None:
    for model, shape in ((_bottleneck(), (2, 32, 9, 9)), (conv_model(), (2, 3, 12, 12))):
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        ref = tensorkiln.build(model, optimize=False).run({"x": x})["y"]
        e = tensorkiln.build(model, opt_level=0)
        convs = [nd for nd in e.graph.nodes if nd.op_type == "FusedConv"]
        for nd in convs:
            nd.attrs["tactic"] = "direct-nhwc"
        e._lower()
        assert [s["tactic"] for s in e.steps() if s["op"].endswith("FusedConv")] == ["direct-nhwc"] * len(convs)
        for _ in range(2):  # a second run: the in-place residual must not have disturbed anything
            np.testing.assert_allclose(e.run({"x": x})["y"], ref, rtol=1e-5, atol=1e-5)


def test_wrong_shapes_are_refused_not_read_past() -> None:
    rng = np.random.default_rng(1)
    conv = directconv.DirectConv(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), None, [1, 1], [1, 1, 1, 1],
                                 [1, 1], "", [])
    with pytest.raises(ValueError, match="expected 4 input channels, got 5"):
        conv(torch.zeros(1, 5, 6, 6))
    with pytest.raises(ValueError, match="residual of shape"):
        conv(torch.zeros(1, 4, 6, 6), torch.zeros(1, 8, 5, 6))
    small = directconv.DirectConv(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), None, [1, 1],
                                  [0, 0, 0, 0], [1, 1], "", [])
    with pytest.raises(ValueError, match="has no output"):
        small(torch.zeros(1, 4, 2, 2))


@pytest.mark.parametrize(("c0", "c1"), [(0, 16), (16, 40), (5, 12)])
def test_channel_slice_of_a_wider_tensor_is_read_in_place(c0: int, c1: int) -> None:
    """The outputs of a channel split are views with a pixel stride wider than their channels."""
    rng = np.random.default_rng(c0)
    wide = torch.from_numpy(rng.standard_normal((2, 40, 9, 11)).astype(np.float32)).contiguous(memory_format=CL)
    view = wide[:, c0:c1]
    assert directconv._pixel_stride(view) == 40 and not view.is_contiguous(memory_format=CL)
    wt = rng.standard_normal((8, c1 - c0, 3, 3)).astype(np.float32)
    y = directconv.DirectConv(wt, None, [2, 2], [1, 1, 1, 1], [1, 1], "", [])(view)
    want = _ref(view, wt, np.zeros(8, np.float32), 2, (1, 1, 1, 1), 1, None, "", [])
    assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-5)
    assert directconv._pixel_stride(torch.zeros(1, 4, 3, 3)) == 0  # NCHW: copied to channels-last first


@pytest.mark.parametrize("shape", [(1, 24, 1, 1), (3, 24, 1, 1), (2, 24, 5, 1), (2, 24, 1, 5)])
def test_size_one_spatial_dims_with_any_strides(shape: tuple[int, ...]) -> None:
    """PyTorch leaves arbitrary strides on dimensions of size 1 (a [1, C, 1, 1] tensor may have
    strides (C, 1, 1, 1) and still count as channels-last): such inputs (a 1x1 convolution after a
    global pool, an SE block) must run, on the right numbers. A copy here once left the kernel
    with null tables and crashed."""
    rng = np.random.default_rng(len(shape))
    wt = rng.standard_normal((16, 24, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    conv = directconv.DirectConv(wt, bias, [1, 1], [0, 0, 0, 0], [1, 1], "Relu", [])
    base = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    variants = [base, base.contiguous(memory_format=CL), base.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)]
    if shape[2] == shape[3] == 1:
        variants.append(torch.as_strided(base.clone(), shape, (24, 1, 1, 1)) if shape[0] == 1 else base)
    for x in variants:
        cs = directconv._pixel_stride(x)
        assert cs in (0, 24)
        want = _ref(x, wt, bias, 1, (0, 0, 0, 0), 1, None, "Relu", [])
        assert torch.allclose(conv(x).double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("n", "c", "h", "w", "k", "r", "s", "pads", "d"), [
    (3, 3, 30, 30, 64, 7, 2, (3, 3, 3, 3), 1),  # a stem: many tiles, patch rows gathered per thread chunk
    (1, 3, 17, 19, 20, 3, 1, (1, 1, 1, 1), 1),  # 3x3: rows copied 8 floats at a time (5 spill ahead)
    (1, 5, 9, 8, 16, 3, 2, (0, 1, 2, 1), 2),  # dilation, asymmetric pads; few tiles: all rows first
])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_im2col_matches_float64_convolution(n: int, c: int, h: int, w: int, k: int, r: int, s: int,
                                            pads: tuple[int, ...], d: int, layout: str) -> None:
    rng = np.random.default_rng(c * k + h)
    wt = (rng.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((n, c, h, w)).astype(np.float32))
    x = x.contiguous(memory_format=CL) if layout == "nhwc" else x
    conv = directconv.Im2ColConv(wt, bias, [s, s], list(pads), [d, d], "Relu", [])
    want = _ref(x, wt, bias, s, pads, d, None, "Relu", [])
    for _ in range(2):  # the cached layout
        y = conv(x)
        assert y.shape == want.shape and y.is_contiguous(memory_format=CL)
        assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-5)
    z = torch.from_numpy(rng.standard_normal(tuple(want.shape)).astype(np.float32)).contiguous(memory_format=CL)
    y = conv(x, z.clone(memory_format=CL))
    assert torch.allclose(y.double(), _ref(x, wt, bias, s, pads, d, z, "Relu", []), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("n", "c", "h", "w", "k", "r", "s", "pads", "dh"), [
    (3, 3, 30, 30, 64, 7, 2, (3, 3, 3, 3), 1),  # a stem: many tiles
    (1, 3, 17, 19, 20, 3, 1, (1, 1, 1, 1), 1),  # K not a multiple of 16
    (1, 5, 9, 8, 16, 3, 2, (0, 1, 2, 1), 2),  # dilation along H, asymmetric pads; few tiles
    (2, 1, 6, 7, 3, 5, 1, (2, 0, 2, 3), 1),  # one channel; pads wider than a side
])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_rows_matches_float64_convolution(n: int, c: int, h: int, w: int, k: int, r: int, s: int,
                                          pads: tuple[int, ...], dh: int, layout: str) -> None:
    rng = np.random.default_rng(c * k + h + 1)
    wt = (rng.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((n, c, h, w)).astype(np.float32))
    x = x.contiguous(memory_format=CL) if layout == "nhwc" else x
    conv = directconv.RowsConv(wt, bias, [s, s], list(pads), [dh, 1], "Relu", [])
    ref = torch.nn.functional.conv2d(F.pad(x.double(), (pads[1], pads[3], pads[0], pads[2])),
                                     torch.from_numpy(wt).double(), torch.from_numpy(bias).double(), s, 0, (dh, 1))
    want = torch.relu(ref)
    for _ in range(2):  # the cached layout
        y = conv(x)
        assert y.shape == want.shape and y.is_contiguous(memory_format=CL)
        assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-5)
    z = torch.from_numpy(rng.standard_normal(tuple(want.shape)).astype(np.float32)).contiguous(memory_format=CL)
    y = conv(x, z.clone(memory_format=CL))
    assert torch.allclose(y.double(), torch.relu(ref + z.double()), rtol=1e-5, atol=1e-5)


def test_rows_needs_unit_width_dilation() -> None:
    with pytest.raises(ValueError, match="dilation 1 along the width"):
        directconv.RowsConv(np.zeros((4, 3, 3, 3), np.float32), None, [1, 1], [0] * 4, [1, 2], "Relu", [])


def test_concurrent_first_calls_keep_the_geometry_they_use() -> None:
    """Threads making a kernel's first calls at once: each must use the geometry tensors the kernel
    keeps (their addresses go into the call and into chain plans). A second thread's copy replacing
    the first one's in the cache freed tensors still in use (seen: a crash, and wrong results from
    an engine run by two streams)."""
    import threading

    rng = np.random.default_rng(9)
    wt = (rng.standard_normal((16, 3, 3, 3)) / 5).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((2, 3, 12, 12)).astype(np.float32))
    want = _ref(x, wt, bias, 1, (1, 1, 1, 1), 1, None, "Relu", [])
    for _ in range(20):
        convs = [directconv.DirectConv(wt, bias, [1, 1], [1, 1, 1, 1], [1, 1], "Relu", []),
                 directconv.RowsConv(wt, bias, [1, 1], [1, 1, 1, 1], [1, 1], "Relu", [])]
        xs = [x.contiguous(memory_format=CL), x]
        barrier = threading.Barrier(4)
        got: list[torch.Tensor] = []

        def work(conv: object, xi: torch.Tensor, barrier: threading.Barrier, got: list[torch.Tensor]) -> None:
            barrier.wait()
            got.append(conv(xi))  # type: ignore[operator]

        threads = [threading.Thread(target=work, args=(c, xi, barrier, got)) for c, xi in zip(convs * 2, xs * 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 4 and all(torch.allclose(y.double(), want, rtol=1e-5, atol=1e-5) for y in got)
        kept = {int(g.data_ptr()) for g, _, _, _ in convs[0]._geom.values()}
        assert all(lay[1] in kept for lay in convs[0]._layouts.values())
        assert len(convs[1]._layouts) == 1
