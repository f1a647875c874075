"""1x1 convolution as GEMM (+ residual as the C operand, + native bias/activation epilogue)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

import tensorkiln
from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import gemm1x1

pytestmark = pytest.mark.skipif(not gemm1x1.available(),
                                reason=f"native epilogue kernels unavailable: {native.why_unavailable('eltwise')}")

CL = torch.channels_last


@pytest.mark.parametrize(("n", "c", "k", "h", "w"), [(1, 64, 256, 14, 14), (2, 3, 5, 7, 9), (1, 130, 70, 1, 1)])
@pytest.mark.parametrize(("act", "params"), [("", []), ("Relu", []), ("Clip", [-0.3, 0.4])])
@pytest.mark.parametrize("chunk_bytes", [gemm1x1.CHUNK_BYTES, 64])  # one chunk / many chunks of 16 rows
def test_matches_direct_convolution(n: int, c: int, k: int, h: int, w: int, act: str, params: list[float],
                                    chunk_bytes: int) -> None:
    rng = np.random.default_rng(c * k + h)
    wt = rng.standard_normal((k, c, 1, 1)).astype(np.float32) / np.sqrt(c)
    bias = rng.standard_normal(k).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((n, c, h, w)).astype(np.float32)).contiguous(memory_format=CL)
    z = torch.from_numpy(rng.standard_normal((n, k, h, w)).astype(np.float32)).contiguous(memory_format=CL)

    def ref(zz: torch.Tensor | None) -> torch.Tensor:
        y = F.conv2d(x.double(), torch.from_numpy(wt).double(), torch.from_numpy(bias).double())
        y = y if zz is None else y + zz.double()
        return y.relu() if act == "Relu" else y.clamp(*params) if act == "Clip" else y

    for inplace in (False, True):
        conv = gemm1x1.Gemm1x1(wt, bias, act, params, inplace=inplace, chunk_bytes=chunk_bytes)
        assert torch.allclose(conv(x).double(), ref(None), rtol=1e-5, atol=1e-5)
        zc = z.clone(memory_format=CL)
        want = ref(zc)
        y = conv(x, zc)
        assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-5)
        assert y.is_contiguous(memory_format=CL)
        # in place: the result is written into z's memory; otherwise z is untouched
        assert (y.data_ptr() == zc.data_ptr()) == inplace
        if not inplace:
            assert torch.equal(zc, z)


def _bottleneck() -> onnx.ModelProto:
    """x -> 1x1 conv+relu -> 1x1 conv, + x (the residual dies at the add) -> relu."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 32, 1, 1)) / 6).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "B1"),
             numpy_helper.from_array((rng.standard_normal((32, 16, 1, 1)) / 4).astype(np.float32), "W2"),
             numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "B2")]
    nodes = [helper.make_node("Relu", ["x"], ["xr"]),
             helper.make_node("Conv", ["xr", "W1", "B1"], ["a"]), helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "W2", "B2"], ["b"]), helper.make_node("Add", ["b", "xr"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    g = helper.make_graph(nodes, "bottleneck", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32, 9, 9])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_engine_with_every_conv_on_gemm_1x1() -> None:
    x = np.random.default_rng(0).standard_normal((2, 32, 9, 9)).astype(np.float32)
    ref = tensorkiln.build(_bottleneck(), optimize=False).run({"x": x})["y"]
    e = tensorkiln.build(_bottleneck(), opt_level=0)
    convs = [n for n in e.graph.nodes if n.op_type == "FusedConv"]
    assert len(convs) == 2 and any(len(n.inputs) > 3 and n.inputs[3] is not None for n in convs)
    for n in convs:
        n.attrs["tactic"] = "gemm-1x1"
    e._lower()
    assert [s["tactic"] for s in e.steps() if s.get("tactic")] == ["gemm-1x1", "gemm-1x1"]
    for _ in range(2):  # a second run: the in-place residual must not have disturbed anything
        np.testing.assert_allclose(e.run({"x": x})["y"], ref, rtol=1e-5, atol=1e-5)
