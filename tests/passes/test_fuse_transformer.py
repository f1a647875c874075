import io
import math

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tests.passes.util import before_after, ops


class DecomposedLN(nn.Module):
    """LayerNorm written out the way Paddle and older exporters emit it."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.randn(n))
        self.b = nn.Parameter(torch.randn(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(-1, keepdim=True)
        d = x - m
        v = d.pow(2).mean(-1, keepdim=True)
        return d / torch.sqrt(v + 1e-5) * self.g + self.b


class Block(nn.Module):
    def __init__(self, d: int = 32, heads: int = 4, gelu: str = "none") -> None:
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.ln = DecomposedLN(d)
        self.ff = nn.Linear(d, d)
        self.gelu = gelu

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q = q.reshape(b, s, self.h, self.dk).transpose(1, 2)
        k = k.reshape(b, s, self.h, self.dk).permute(0, 2, 3, 1)
        v = v.reshape(b, s, self.h, self.dk).transpose(1, 2)
        scores = torch.matmul(q, k) / math.sqrt(self.dk) + (1.0 - mask[:, None, None, :]) * -10000.0
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, s, d)
        y = self.ln(ctx + x)
        return nn.functional.gelu(self.ff(y), approximate=self.gelu)


def _export(m: nn.Module) -> onnx.ModelProto:
    torch.manual_seed(0)
    x, mask = torch.randn(2, 5, 32), torch.ones(2, 5)
    f = io.BytesIO()
    torch.onnx.export(m.eval(), (x, mask), f, dynamo=False, opset_version=17, input_names=["x", "mask"],
                      output_names=["y"], dynamic_axes={"x": {0: "b", 1: "s"}, "mask": {0: "b", 1: "s"}},
                      do_constant_folding=False)
    return onnx.load_from_string(f.getvalue())


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    torch.manual_seed(0)
    return _export(Block())


def _feeds(b: int = 2, s: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.ones((b, s), np.float32)
    mask[:, -1] = 0
    return {"x": rng.standard_normal((b, s, 32)).astype(np.float32), "mask": mask}


def test_gelu_layernorm_attention_fuse(model: onnx.ModelProto) -> None:
    before, after = before_after(model, _feeds())
    got = ops(after)
    # GELU is fused, then absorbed as the epilogue of the feed-forward FusedGemm
    acts = [n.attrs.get("activation") for n in after.graph.nodes if n.op_type == "FusedGemm"]
    assert acts.count("Gelu") == 1 and "tensorkiln::Gelu" not in got
    assert got.count("tensorkiln::LayerNorm") == 1
    assert got.count("tensorkiln::Attention") == 1
    for op in ("Erf", "Softmax", "ReduceMean", "Sqrt"):
        assert op not in got
    assert len(got) < len(ops(before))
    assert after.build_reports["fuse-gemm"]["fired"] == 2  # qkv and feed-forward projections
    for name in ("fuse-gelu", "fuse-layernorm", "fuse-attention"):
        assert after.build_reports[name]["fired"] == 1


def test_fused_block_matches_at_other_shapes(model: onnx.ModelProto) -> None:
    for b, s in ((1, 3), (3, 11)):
        before_after(model, _feeds(b, s))


def test_gelu_tanh_form_is_left_exact() -> None:
    m = _export(Block(gelu="tanh"))
    _, after = before_after(m, _feeds())
    # the tanh form is not fused yet; the graph must still be correct
    assert "tensorkiln::Attention" in ops(after)
