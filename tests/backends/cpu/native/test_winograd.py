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
@pytest.mark.parametrize("r", [3, 5])  # F(4x4, 3x3) and F(2x2, 5x5)
def test_matches_direct_convolution(n: int, c: int, k: int, h: int, w: int, pads: list[int], act: str,
                                    params: list[float], r: int) -> None:
    rng = np.random.default_rng(n * 1000 + c + k + h + w)
    if r == 5:
        pads = [p + 1 for p in pads]  # the same output sizes as the 3x3 cases
    wt = rng.standard_normal((k, c, r, r)).astype(np.float32) / np.sqrt(r * r * c)
    bias = rng.standard_normal(k).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((n, c, h, w)).astype(np.float32)).contiguous(
        memory_format=torch.channels_last)
    ho, wo = h + pads[0] + pads[2] - r + 1, w + pads[1] + pads[3] - r + 1
    z = torch.from_numpy(rng.standard_normal((n, k, ho, wo)).astype(np.float32))
    per_tile = 36 * 4 * (c + (k + 15) // 16 * 16)  # a group's V and M per tile
    # each thread its tiles / its output channels
    groups, ksplit = {"ksplit_tiles": 0}, {"ksplit_tiles": 10**9, "ksplit_u_bytes": 0}
    convs = [(winograd.Winograd(wt, bias, pads, act, params), None),
             (winograd.Winograd(wt, bias, pads, act, params, **groups), z),
             (winograd.Winograd(wt, bias, pads, act, params, **ksplit), z),
             (winograd.Winograd(wt, bias, pads, act, params, group_bytes=per_tile * 8, **groups), z),  # groups of 6
             (winograd.Winograd(wt, bias, pads, act, params, group_bytes=per_tile * 4, **groups), z)]  # of 4
    assert [conv.group for conv, _ in convs[3:]] == [6, 4]
    for conv, zz in convs:
        y = conv(x, zz)
        ref = _reference(x, wt, bias, pads, zz, act, params)
        scale = _reference(x, wt, bias, pads, zz, "", []).abs().max().item()  # before the activation clips it
        assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
        err = (y.double() - ref).abs().max().item()
        assert err <= 2e-5 * max(1.0, scale), f"max error {err} (output scale {scale})"
    modes = [int(next(iter(conv._layouts.values()))[0][15]) for conv, _ in convs[1:3]]  # the geometry's W_KSPLIT
    assert modes == [0, 1]


def test_no_bias_and_nchw_input() -> None:
    rng = np.random.default_rng(3)
    wt = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((1, 4, 5, 5)).astype(np.float32))  # plain NCHW: converted
    y = winograd.Winograd(wt, None, [1, 1, 1, 1], "", [])(x)
    ref = _reference(x, wt, None, [1, 1, 1, 1], None, "", [])
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-5, atol=1e-4)


def test_g_matrices_are_the_published_ones() -> None:
    """F(4x4, 3x3)'s G as printed by Lavin & Gray; F(2x2, 5x5)'s rows follow the same rule."""
    g3 = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                   [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
    np.testing.assert_allclose(winograd.g_matrix(3), g3, rtol=1e-12)
    g5 = winograd.g_matrix(5)
    np.testing.assert_allclose(g5[1], np.full(5, -1 / 6), rtol=1e-12)
    np.testing.assert_allclose(g5[4], np.array([1, -2, 4, -8, 16]) / 24, rtol=1e-12)
    np.testing.assert_allclose(g5[5], [0, 0, 0, 0, 1])


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


@pytest.mark.parametrize(("r", "tactic"), [(3, "winograd-f43"), (5, "winograd-f25")])
def test_engine_step_on_winograd(r: int, tactic: str) -> None:
    from onnx import TensorProto, helper, numpy_helper

    import tensorkiln

    rng = np.random.default_rng(r)
    w = numpy_helper.from_array((rng.standard_normal((24, 16, r, r)) / (4 * r)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(24).astype(np.float32), "B")
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[r // 2] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 13, 11])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, b])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((2, 16, 13, 11)).astype(np.float32)
    ref = tensorkiln.build(model, optimize=False).run({"x": x})["y"]
    e = tensorkiln.build(model, opt_level=0)
    (conv,) = [n for n in e.graph.nodes if n.op_type == "FusedConv"]
    other = "winograd-f25" if tactic == "winograd-f43" else "winograd-f43"
    conv.attrs["tactic"] = other  # the other kernel size's tactic is refused with a reason
    with pytest.raises(tensorkiln.errors.UnsupportedOpError, match=other):
        e._lower()
    conv.attrs["tactic"] = tactic
    e._lower()
    assert [s.get("tactic") for s in e.steps() if s.get("tactic")] == [tactic]
    np.testing.assert_allclose(e.run({"x": x})["y"], ref, rtol=1e-4, atol=1e-4)
