"""CPU kernels: com.microsoft contrib ops that exported/optimized transformers use.

GELU variants (Gelu, FastGelu, BiasGelu, QuickGelu), BiasAdd, FusedMatMul, the fused
normalizations (SkipLayerNormalization, SkipSimplifiedLayerNormalization,
SimplifiedLayerNormalization, EmbedLayerNormalization). Semantics follow
onnxruntime's contrib operator schemas; float16/bfloat16 normalizations are computed in
float32 and cast back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import BuildContext, Factory, Kernel, attr, unsupported
from tensorkiln.ir import Node

MS = "com.microsoft::"
_LOW = (torch.float16, torch.bfloat16)


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in _LOW else t


# ------------------------------------------------------------------------ activations


def _gelu(node: Node, ctx: BuildContext) -> Kernel:
    def kernel(x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x)

    return kernel


def _bias_gelu(node: Node, ctx: BuildContext) -> Kernel:
    def kernel(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + b)

    return kernel


def _fast_gelu(node: Node, ctx: BuildContext) -> Kernel:
    def kernel(x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        if b is not None:
            x = x + b
        return F.gelu(x, approximate="tanh")

    return kernel


def _quick_gelu(node: Node, ctx: BuildContext) -> Kernel:
    alpha = float(attr(node, "alpha", 1.702))

    def kernel(x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x * alpha)

    return kernel


def _bias_add(node: Node, ctx: BuildContext) -> Kernel:
    def kernel(x: torch.Tensor, bias: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return x + bias + skip

    return kernel


def _fused_matmul(node: Node, ctx: BuildContext) -> Kernel:
    alpha = float(attr(node, "alpha", 1.0))
    ta, tb = int(attr(node, "transA", 0)), int(attr(node, "transB", 0))
    if int(attr(node, "transBatchA", 0)) or int(attr(node, "transBatchB", 0)):
        raise unsupported(node, "transBatchA/transBatchB")

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if ta:
            a = a.transpose(-1, -2) if a.dim() >= 2 else a
        if tb:
            b = b.transpose(-1, -2) if b.dim() >= 2 else b
        y = torch.matmul(a, b)
        return y * alpha if alpha != 1.0 else y

    return kernel


# ---------------------------------------------------------------------- normalizations


def _outs(node: Node, full: dict[int, torch.Tensor | None]) -> Any:
    n = len(node.outputs)
    res = [full.get(i) for i in range(n)]
    res = [r if r is not None else torch.empty(0) for r in res]
    return res[0] if n == 1 else tuple(res)


def _skip_ln(simplified: bool) -> Factory:
    def factory(node: Node, ctx: BuildContext) -> Kernel:
        eps = float(attr(node, "epsilon", 1e-12))

        def kernel(x: torch.Tensor, skip: torch.Tensor, gamma: torch.Tensor,
                   *rest: torch.Tensor | None) -> Any:
            if simplified:
                beta, bias = None, (rest[0] if rest else None)
            else:
                beta = rest[0] if rest else None
                bias = rest[1] if len(rest) > 1 else None
            s = x + skip
            if bias is not None:
                s = s + bias
            sf = _f32(s)
            if simplified:
                mean = None
                inv = torch.rsqrt(sf.pow(2).mean(-1, keepdim=True) + eps)
                y = sf * inv * _f32(gamma)
            else:
                mean = sf.mean(-1, keepdim=True)
                var = (sf - mean).pow(2).mean(-1, keepdim=True)
                inv = torch.rsqrt(var + eps)
                y = (sf - mean) * inv * _f32(gamma)
                if beta is not None:
                    y = y + _f32(beta)
            return _outs(node, {0: y.to(x.dtype), 1: mean, 2: inv, 3: s})

        return kernel

    return factory


def _simplified_ln(node: Node, ctx: BuildContext) -> Kernel:
    eps = float(attr(node, "epsilon", 1e-5))
    axis = int(attr(node, "axis", -1))
    if int(attr(node, "stash_type", 1)) != 1:
        raise unsupported(node, "stash_type other than float32")

    def kernel(x: torch.Tensor, scale: torch.Tensor) -> Any:
        ax = axis + x.dim() if axis < 0 else axis
        dims = tuple(range(ax, x.dim()))
        xf = x.float()
        inv = torch.rsqrt(xf.pow(2).mean(dims, keepdim=True) + eps)
        y = (xf * inv).to(x.dtype) * scale
        return _outs(node, {0: y, 1: inv})

    return kernel


def _embed_ln(node: Node, ctx: BuildContext) -> Kernel:
    eps = float(attr(node, "epsilon", 1e-12))
    mask_type = int(attr(node, "mask_index_type", 1))

    def kernel(ids: torch.Tensor, seg: torch.Tensor | None, word: torch.Tensor, pos: torch.Tensor,
               seg_emb: torch.Tensor | None, gamma: torch.Tensor, beta: torch.Tensor,
               mask: torch.Tensor | None = None, pos_ids: torch.Tensor | None = None) -> Any:
        ids = ids.long()
        S = ids.shape[1]
        if pos_ids is None:
            p = pos[:S].unsqueeze(0)
        else:
            p = pos[pos_ids.long()]
            if p.dim() == 2:
                p = p.unsqueeze(0)
        emb = word[ids] + p
        if seg is not None and seg_emb is not None:
            emb = emb + seg_emb[seg.long()]
        y = F.layer_norm(_f32(emb), (emb.shape[-1],), _f32(gamma), _f32(beta), eps).to(word.dtype)
        if mask is not None and mask_type:
            mask_index = mask.to(torch.int32).sum(-1, dtype=torch.int32)
        else:
            mask_index = torch.zeros(ids.shape[0], dtype=torch.int32)
        return _outs(node, {0: y, 1: mask_index, 2: emb})

    return kernel


KERNELS: dict[str, Factory] = {
    MS + "Gelu": _gelu,
    MS + "BiasGelu": _bias_gelu,
    MS + "FastGelu": _fast_gelu,
    MS + "QuickGelu": _quick_gelu,
    MS + "BiasAdd": _bias_add,
    MS + "FusedMatMul": _fused_matmul,
    MS + "SkipLayerNormalization": _skip_ln(False),
    MS + "SkipSimplifiedLayerNormalization": _skip_ln(True),
    MS + "SimplifiedLayerNormalization": _simplified_ln,
    "SimplifiedLayerNormalization": _simplified_ln,  # onnxruntime registers it in the ONNX domain
    MS + "EmbedLayerNormalization": _embed_ln,
}
