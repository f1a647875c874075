"""tensorkiln int8 kernels (QConv, QGemm, QMaxPool, Quantize, Dequantize) against fp32 references.

The references compute in float64 on the dequantized operands; int8 products are exact in the
kernels (7-bit weights on CPUs without VNNI), so uint8 outputs must match exactly except where
the real value sits within float rounding of a .5 step, and float outputs to 1e-5 relative.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import BuildContext
from tensorkiln.backends.cpu.registry import REGISTRY
from tensorkiln.ir import DType, Node, Value
from tensorkiln.quant.qparams import dequantize_weight, quantize_weight

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (mkldnn) in torch")

CTX = BuildContext(compile_subgraph=lambda g: None)  # type: ignore[arg-type,return-value]
rng = np.random.default_rng(0)


LAST: dict[str, Node] = {}


def kernel(op: str, inputs: list[Value | None], attrs: dict[str, Any], out_dtype: DType = DType.FLOAT32) -> Any:
    node = Node(op, inputs, [Value("y", out_dtype)], attrs, name=op.lower(), domain="tensorkiln", opset=1)
    LAST["node"] = node
    return REGISTRY[("tensorkiln", op)](node, CTX)


def _direct_runs(attrs: dict[str, Any]) -> bool:
    """QConv asked for direct-int8 / im2col-int8 got it (where the kernel can run it), else fell back
    to oneDNN."""
    from tensorkiln.backends.cpu.native import qdirectconv

    can = qdirectconv.available() and attrs["group"] == 1 and attrs["activation"] in qdirectconv.ACTIVATIONS
    assert LAST["node"].attrs["tactic"] == (attrs["tactic"] if can else "onednn-int8")
    return can


TACTICS = pytest.mark.parametrize("tactic", ["onednn-int8", "direct-int8", "im2col-int8"])


def quant(x: torch.Tensor, s: float, z: int) -> torch.Tensor:
    return torch.clamp(torch.round(x.double() / s) + z, 0, 255).to(torch.uint8)


def deq(q: torch.Tensor, s: float, z: int) -> torch.Tensor:
    return (q.double() - z) * s


def assert_u8_close(got: torch.Tensor, want_real: torch.Tensor, s: float, z: int) -> None:
    """Equal to the rounded reference, except off by one where the real value is within 1e-4 steps of .5."""
    want = quant(want_real, s, z)
    diff = (got.to(torch.int32) - want.to(torch.int32)).abs()
    frac = (want_real.double() / s) % 1.0
    near_half = (frac - 0.5).abs() < 1e-4
    assert int(diff.max()) <= 1
    assert bool(((diff == 0) | near_half).all()), f"{int((diff != 0).sum())} elements differ"


def conv_case(groups: int = 1, pads: tuple[int, ...] = (1, 1, 1, 1), stride: int = 1, c: int = 8, k: int = 12,
              act: str = "") -> tuple[dict[str, Any], list[Value | None], torch.Tensor, torch.Tensor]:
    w = (rng.standard_normal((k, c // groups, 3, 3)) * 0.2).astype(np.float32)
    q, s = quantize_weight(w)
    b = (rng.standard_normal(k) * 0.1).astype(np.float32)
    attrs = {"strides": [stride, stride], "pads": list(pads), "dilations": [1, 1], "group": groups,
             "activation": act, "activation_params": [0.0, 6.0] if act == "Clip" else [],
             "x_scale": 0.02, "x_zero_point": 100, "layout": "nhwc"}
    x = Value("x", DType.UINT8, (2, c, 9, 9))
    inputs: list[Value | None] = [x, Value("wq", const=q), Value("ws", const=s), Value("b", const=b)]
    return attrs, inputs, torch.from_numpy(dequantize_weight(q, s)).double(), torch.from_numpy(b).double()


def ref_conv(xd: torch.Tensor, wd: torch.Tensor, b: torch.Tensor, attrs: dict[str, Any]) -> torch.Tensor:
    p = attrs["pads"]
    xd = F.pad(xd, [p[1], p[3], p[0], p[2]])
    return F.conv2d(xd, wd, b, stride=attrs["strides"], groups=attrs["group"])


ACTS = {"": lambda t: t, "Relu": torch.relu, "Clip": lambda t: t.clamp(0, 6), "HardSwish": F.hardswish}


@TACTICS
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize(("groups", "pads", "stride"), [(1, (1, 1, 1, 1), 1), (4, (1, 1, 1, 1), 2),
                                                        (8, (0, 1, 2, 1), 1), (1, (0, 1, 2, 1), 2)])
def test_qconv_uint8_in_uint8_out(act: str, groups: int, pads: tuple[int, ...], stride: int, tactic: str) -> None:
    attrs, inputs, wd, b = conv_case(groups=groups, pads=pads, stride=stride, c=8, k=8, act=act)
    attrs.update(out_dtype="uint8", y_scale=0.03, y_zero_point=90, tactic=tactic)
    qx = torch.from_numpy(rng.integers(0, 256, (2, 8, 9, 9)).astype(np.uint8))
    got = kernel("QConv", [*inputs, None], attrs, DType.UINT8)(qx, None, None, None, None)
    if tactic != "onednn-int8":
        _direct_runs(attrs)
    assert got.dtype == torch.uint8
    want = ACTS[act](ref_conv(deq(qx, 0.02, 100), wd, b, attrs))
    assert_u8_close(got, want, 0.03, 90)


@TACTICS
def test_qconv_float_in_float_out_quantizes_the_input(tactic: str) -> None:
    attrs, inputs, wd, b = conv_case(act="Relu")
    attrs.update(out_dtype="float32", tactic=tactic)
    inputs[0] = Value("x", DType.FLOAT32, (2, 8, 9, 9))
    x = torch.randn(2, 8, 9, 9)
    got = kernel("QConv", [*inputs, None], attrs)(x)
    if tactic != "onednn-int8":
        _direct_runs(attrs)
    assert got.dtype == torch.float32
    want = torch.relu(ref_conv(deq(quant(x, 0.02, 100), 0.02, 100), wd, b, attrs))
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("z_dtype", "out_dtype"), [("uint8", "uint8"), ("float32", "uint8"),
                                                    ("uint8", "float32"), ("float32", "float32")])
@pytest.mark.parametrize("act", ["", "Relu"])
@TACTICS
def test_qconv_residual_sum(z_dtype: str, out_dtype: str, act: str, tactic: str) -> None:
    attrs, inputs, wd, b = conv_case(act=act)
    attrs.update(out_dtype=out_dtype, z_scale=0.05, z_zero_point=120, tactic=tactic)
    if out_dtype == "uint8":
        attrs.update(y_scale=0.04, y_zero_point=7)
    qx = torch.from_numpy(rng.integers(0, 256, (2, 8, 9, 9)).astype(np.uint8))
    zf = torch.randn(2, 12, 9, 9) * 2
    z = quant(zf, 0.05, 120) if z_dtype == "uint8" else zf
    z_before = z.clone()
    zv = Value("z", DType.UINT8 if z_dtype == "uint8" else DType.FLOAT32, tuple(z.shape))
    got = kernel("QConv", [*inputs, zv], attrs)(qx, None, None, None, z)
    assert torch.equal(z, z_before), "the residual input was modified"
    if tactic != "onednn-int8":
        _direct_runs(attrs)
    zd = deq(quant(zf, 0.05, 120), 0.05, 120) if (z_dtype == "uint8" or out_dtype == "uint8") else zf.double()
    want = ACTS[act](ref_conv(deq(qx, 0.02, 100), wd, b, attrs) + zd)
    if out_dtype == "uint8":
        assert_u8_close(got, want, 0.04, 7)
    else:
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_qconv_activation_outside_onednn_runs_on_float_output() -> None:
    attrs, inputs, wd, b = conv_case(act="Sigmoid")
    attrs["out_dtype"] = "float32"
    qx = torch.from_numpy(rng.integers(0, 256, (2, 8, 9, 9)).astype(np.uint8))
    got = kernel("QConv", [*inputs, None], attrs)(qx)
    torch.testing.assert_close(got.double(), torch.sigmoid(ref_conv(deq(qx, 0.02, 100), wd, b, attrs)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("out_dtype", ["uint8", "float32"])
@pytest.mark.parametrize("x_dtype", ["uint8", "float32"])
@pytest.mark.parametrize("act", ["", "Relu", "Tanh"])
@pytest.mark.parametrize("shape", [(5, 24), (1, 24), (3, 24), (2, 2, 24)])  # <= 4 rows: the direct int8 kernel
def test_qgemm(out_dtype: str, x_dtype: str, act: str, shape: tuple[int, ...]) -> None:
    if act == "Tanh" and out_dtype == "uint8":
        pytest.skip("Tanh is not a oneDNN int8 post-op: such layers write float32 (the plan never asks for uint8)")
    w = (rng.standard_normal((10, 24)) * 0.2).astype(np.float32)
    q, s = quantize_weight(w)
    b = (rng.standard_normal(10) * 0.1).astype(np.float32)
    attrs: dict[str, Any] = {"activation": act, "activation_params": [], "x_scale": 0.03, "x_zero_point": 128,
                             "out_dtype": out_dtype}
    if out_dtype == "uint8":
        attrs.update(y_scale=0.05, y_zero_point=3)
    xv = Value("x", DType.UINT8 if x_dtype == "uint8" else DType.FLOAT32, shape)
    k = kernel("QGemm", [xv, Value("wq", const=q), Value("ws", const=s), Value("b", const=b)], attrs)
    xf = torch.randn(*shape) * 2
    qx = quant(xf, 0.03, 128)
    got = k(qx if x_dtype == "uint8" else xf)
    f = {"": lambda t: t, "Relu": torch.relu, "Tanh": torch.tanh}[act]
    want = f(F.linear(deq(qx, 0.03, 128), torch.from_numpy(dequantize_weight(q, s)).double(),
                      torch.from_numpy(b).double()))
    if out_dtype == "uint8":
        assert_u8_close(got, want, 0.05, 3)
    else:
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [4, 70])  # under one register of 32 codes; registers and a tail
@pytest.mark.parametrize("dil", [1, 2])
@pytest.mark.parametrize("native", [True, False])
def test_qmaxpool_equals_maxpool_of_codes(channels: int, dil: int, native: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorkiln.backends.cpu.native import pool

    if native and not pool.available():
        pytest.skip("the native pool kernel needs a C compiler")
    monkeypatch.setattr(pool, "available", lambda: native and pool.library() is not None)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [dil, dil],
             "x_scale": 0.1, "x_zero_point": 30}
    qx = torch.from_numpy(rng.integers(0, 256, (2, channels, 11, 11)).astype(np.uint8))
    for x in (qx, qx.contiguous(memory_format=torch.channels_last)):
        got = kernel("QMaxPool", [Value("x", DType.UINT8)], attrs, DType.UINT8)(x)
        # padding never wins: max over the window's real elements
        want = F.max_pool2d(qx.float(), 3, 2, 1, dilation=dil)
        assert got.dtype == torch.uint8 and torch.equal(got.float(), want)


@pytest.mark.parametrize("out_dtype", ["uint8", "float32"])
def test_qglobalavgpool_native_and_torch_paths_agree(out_dtype: str) -> None:
    attrs: dict[str, Any] = {"x_scale": 0.05, "x_zero_point": 9, "out_dtype": out_dtype}
    if out_dtype == "uint8":
        attrs.update(y_scale=0.02, y_zero_point=5)
    k = kernel("QGlobalAveragePool", [Value("x", DType.UINT8)], attrs,
               DType.UINT8 if out_dtype == "uint8" else DType.FLOAT32)
    qx = torch.from_numpy(rng.integers(0, 256, (2, 40, 6, 5)).astype(np.uint8))
    a, b = k(qx), k(qx.contiguous(memory_format=torch.channels_last))  # torch sum; quant.c
    assert a.shape == (2, 40, 1, 1) and torch.equal(a, b)
    real = (qx.double() - 9).mul(0.05).mean(dim=(2, 3), keepdim=True)
    want = quant(real.float(), 0.02, 5).double() if out_dtype == "uint8" else real
    assert float((a.double() - want).abs().max()) <= (1 if out_dtype == "uint8" else 1e-6)


def test_quantize_dequantize_roundtrip() -> None:
    x = torch.tensor([[-1.0, -0.0149, 0.0, 0.01, 0.015, 0.025, 2.0, 100.0]])
    q = kernel("Quantize", [Value("x")], {"y_scale": 0.01, "y_zero_point": 100}, DType.UINT8)(x)
    assert q.tolist() == [[0, 99, 100, 101, 102, 102, 255, 255]]  # half to even: 1.5 → 2, 2.5 → 2
    d = kernel("Dequantize", [Value("q", DType.UINT8)], {"x_scale": 0.01, "x_zero_point": 100})(q)
    torch.testing.assert_close(d, (q.float() - 100) * 0.01)


def test_qconv_tactic_is_chosen_by_heuristic() -> None:
    """QConv is not tuned (in-network timing misattributes oneDNN's per-call setup): direct-int8
    wherever it can run over >= 16 input channels, im2col-int8 for a 3-channel 7x7 stem."""
    from tensorkiln.autotune.tuner import _default_tactic
    from tensorkiln.backends.cpu.native import qdirectconv
    from tensorkiln.backends.cpu.ops_fused import tactics_for

    def node(c: int, r: int) -> Node:
        q, s = quantize_weight((rng.standard_normal((16, c, r, r)) * 0.1).astype(np.float32))
        attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1, "activation": "Relu",
                 "x_scale": 0.02, "x_zero_point": 0, "layout": "nhwc"}
        inputs: list[Value | None] = [Value("x", DType.UINT8, (1, c, 7, 7)), Value("wq", const=q),
                                      Value("ws", const=s), None]
        return Node("QConv", inputs, [Value("y")], attrs, name="q", domain="tensorkiln", opset=1)

    wide1, wide3, stem = node(256, 1), node(64, 3), node(3, 7)
    assert tactics_for(wide1) == tactics_for(wide3) == tactics_for(stem) == {}
    expect = "direct-int8" if qdirectconv.available() else "onednn-int8"
    assert _default_tactic(wide1) == _default_tactic(wide3) == expect
    assert _default_tactic(stem) == ("im2col-int8" if qdirectconv.available() else "onednn-int8")
    assert _default_tactic(node(3, 1)) == "onednn-int8"  # 1x1 over few channels


def test_qgemm_few_rows_run_on_the_direct_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorkiln.backends.cpu.native import qdirectconv

    if not qdirectconv.available():
        pytest.skip("the int8 direct kernel needs a C compiler and AVX2")
    calls: list[tuple[int, ...]] = []
    real = qdirectconv.QDirectConv.__call__

    def spy(self, x, z=None):  # type: ignore[no-untyped-def]
        calls.append(tuple(x.shape))
        return real(self, x, z)

    monkeypatch.setattr(qdirectconv.QDirectConv, "__call__", spy)
    q, s = quantize_weight((rng.standard_normal((10, 24)) * 0.2).astype(np.float32))
    attrs: dict[str, Any] = {"activation": "Relu", "x_scale": 0.03, "x_zero_point": 128, "out_dtype": "float32"}
    k = kernel("QGemm", [Value("x", DType.UINT8, (None, 24)), Value("wq", const=q), Value("ws", const=s), None], attrs)
    k(torch.zeros(4, 24, dtype=torch.uint8))
    k(torch.zeros(5, 24, dtype=torch.uint8))  # more rows: oneDNN's GEMM
    assert calls == [(4, 24, 1, 1)]


def test_qconv_direct_tactic_falls_back_where_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine tuned to direct-int8, loaded where the kernel cannot run (no compiler, no AVX2),
    runs the layer on oneDNN with the same results."""
    from tensorkiln.backends.cpu.native import qdirectconv

    attrs, inputs, wd, b = conv_case(act="Relu")
    attrs.update(out_dtype="uint8", y_scale=0.03, y_zero_point=0, tactic="direct-int8")
    qx = torch.from_numpy(rng.integers(0, 256, (2, 8, 9, 9)).astype(np.uint8))
    want = torch.relu(ref_conv(deq(qx, 0.02, 100), wd, b, attrs))
    monkeypatch.setattr(qdirectconv, "available", lambda: False)
    got = kernel("QConv", [*inputs, None], attrs, DType.UINT8)(qx, None, None, None, None)
    assert LAST["node"].attrs["tactic"] == "onednn-int8"
    assert_u8_close(got, want, 0.03, 0)
