"""CPU kernels: com.microsoft attention ops (Attention, MultiHeadAttention, RotaryEmbedding,
GroupQueryAttention).

Semantics follow onnxruntime's contrib schemas. Masked key positions get
``mask_filter_value`` (default -10000) added to their scores, as onnxruntime does.
Supported masks: key lengths ``[B]``, end/start positions ``[2B]``, key padding
``[B, T]``, ``[B, S, T]`` and the Megatron ``[B, 1, M, M]`` form; past/present KV caches
for Attention (``[2, B, N, P, H]``) and MultiHeadAttention (``[B, N, P, H]``).
Beam-search cache indirection and packed-batching are not supported.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tensorkiln.backends.cpu.base import BuildContext, Factory, Kernel, attr, bad_model, unsupported
from tensorkiln.ir import Node

MS = "com.microsoft::"
_LOW = (torch.float16, torch.bfloat16)


def _key_mask(mask: torch.Tensor | None, B: int, S: int, T: int, past: int,
              causal: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Boolean masks broadcastable to [B, N, S, T]: (padding-masked, causally masked)."""
    out: torch.Tensor | None = None
    j = torch.arange(T)
    if mask is not None:
        m = mask
        if m.dim() == 1 and m.shape[0] == B:
            out = (j.unsqueeze(0) >= m.long().unsqueeze(1)).view(B, 1, 1, T)
        elif m.dim() == 1 and m.shape[0] == 2 * B:
            end, start = m[:B].long().unsqueeze(1), m[B:].long().unsqueeze(1)
            out = ((j.unsqueeze(0) >= end) | (j.unsqueeze(0) < start)).view(B, 1, 1, T)
        elif m.dim() == 2:
            if m.shape[1] == 1:  # dummy [B, 1] / [1, 1]: no masking
                out = None
            else:
                out = (m == 0).view(m.shape[0], 1, 1, m.shape[1])
        elif m.dim() == 3:
            out = (m == 0).unsqueeze(1)
        elif m.dim() == 4:
            out = m[:, :, past:past + S, :T] == 0
        else:
            raise ValueError(f"unsupported mask shape {tuple(m.shape)}")
    c = None
    if causal:
        i = torch.arange(S).unsqueeze(1) + past
        c = (j.unsqueeze(0) > i).view(1, 1, S, T)
    return out, c


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
            masks: tuple[torch.Tensor | None, torch.Tensor | None], bias: torch.Tensor | None,
            fill: float) -> torch.Tensor:
    """q [B,N,S,H], k [B,N,T,H], v [B,N,T,Hv] -> [B,S,N*Hv] (computed in float32 for fp16).

    Padding adds ``fill`` (onnxruntime's mask_filter_value); causally hidden keys get -inf.
    """
    masked, causal = masks
    dt = q.dtype
    if dt in _LOW:
        q, k, v = q.float(), k.float(), v.float()
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if masked is not None:
        scores = scores + torch.where(masked, fill, 0.0)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    if causal is not None:
        scores = scores.masked_fill(causal, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, v)
    B, N, S, Hv = out.shape
    return out.transpose(1, 2).reshape(B, S, N * Hv).to(dt)


def _heads(t: torch.Tensor, N: int) -> torch.Tensor:
    B, S, D = t.shape
    return t.reshape(B, S, N, D // N).transpose(1, 2)


def _outs(node: Node, vals: list[torch.Tensor | None]) -> Any:
    n = len(node.outputs)
    res = [v if v is not None else torch.empty(0) for v in vals[:n]]
    return res[0] if n == 1 else tuple(res)


# -------------------------------------------------------------------------- Attention


def _attention(node: Node, ctx: BuildContext) -> Kernel:
    N = int(attr(node, "num_heads", 0))
    if N <= 0:
        raise bad_model(node, "num_heads must be positive")
    causal = bool(attr(node, "unidirectional", 0))
    sizes = attr(node, "qkv_hidden_sizes")
    fill = float(attr(node, "mask_filter_value", -10000.0))
    scale_attr = attr(node, "scale")
    if int(attr(node, "do_rotary", 0)):
        raise unsupported(node, "do_rotary")
    if int(attr(node, "past_present_share_buffer", 0)):
        raise unsupported(node, "past_present_share_buffer")

    def kernel(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None,
               mask: torch.Tensor | None = None, past: torch.Tensor | None = None,
               attn_bias: torch.Tensor | None = None, *_rest: Any) -> Any:
        qkv = torch.matmul(x, w)
        if b is not None:
            qkv = qkv + b
        hs = [int(s) for s in sizes] if sizes else [qkv.shape[-1] // 3] * 3
        q, k, v = (_heads(t, N) for t in torch.split(qkv, hs, dim=-1))
        P = 0
        if past is not None and past.numel():
            P = past.shape[3]
            k = torch.cat([past[0].to(k.dtype), k], 2)
            v = torch.cat([past[1].to(v.dtype), v], 2)
        B, _, S, H = q.shape
        T = k.shape[2]
        scale = float(scale_attr) if scale_attr else 1.0 / math.sqrt(H)
        masked = _key_mask(mask, B, S, T, P, causal)
        y = _attend(q, k, v, scale, masked, attn_bias, fill)
        present = torch.stack([k, v]) if len(node.outputs) > 1 else None
        return _outs(node, [y, present])

    return kernel


# ------------------------------------------------------------------ MultiHeadAttention


def _mha(node: Node, ctx: BuildContext) -> Kernel:
    N = int(attr(node, "num_heads", 0))
    if N <= 0:
        raise bad_model(node, "num_heads must be positive")
    causal = bool(attr(node, "unidirectional", 0))
    fill = float(attr(node, "mask_filter_value", -10000.0))
    scale_attr = attr(node, "scale")

    def kernel(query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, mask: torch.Tensor | None = None,
               attn_bias: torch.Tensor | None = None, past_k: torch.Tensor | None = None,
               past_v: torch.Tensor | None = None, _past_len: Any = None,
               cache_ind: torch.Tensor | None = None, *_rest: Any) -> Any:
        if cache_ind is not None:
            raise NotImplementedError("MultiHeadAttention with cache_indirection")
        if key is None:  # packed QKV [B, S, N, 3, H]
            if query.dim() != 5:
                raise ValueError("MultiHeadAttention without key needs packed QKV [B, S, N, 3, H]")
            q, k, v = (query[:, :, :, i].transpose(1, 2) for i in range(3))
            if bias is not None:
                raise NotImplementedError("bias with packed QKV")
        else:
            D = query.shape[-1]
            bq = bk = bv = None
            if bias is not None:
                bq, bk, bv = bias[:D], bias[D:2 * D], bias[2 * D:]
            q = _heads(query + bq if bq is not None else query, N)
            if key.dim() == 5:  # packed KV [B, L, N, 2, H]
                k, v = key[:, :, :, 0].transpose(1, 2), key[:, :, :, 1].transpose(1, 2)
            elif key.dim() == 4:  # already [B, N, L, H] (cross-attention cache)
                assert value is not None
                k, v = key, value
            else:
                assert value is not None
                k = _heads(key + bk if bk is not None else key, N)
                v = _heads(value + bv if bv is not None else value, N)
        P = 0
        if past_k is not None and past_v is not None and past_k.numel() and key is not None and key.dim() == 3:
            P = past_k.shape[2]
            k = torch.cat([past_k, k], 2)
            v = torch.cat([past_v, v], 2)
        B, _, S, H = q.shape
        T = k.shape[2]
        scale = float(scale_attr) if scale_attr else 1.0 / math.sqrt(H)
        masked = _key_mask(mask, B, S, T, P, causal)
        y = _attend(q, k, v, scale, masked, attn_bias, fill)
        return _outs(node, [y, k, v])

    return kernel


# --------------------------------------------------------------------- RotaryEmbedding


def _rope(xh: torch.Tensor, p: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rot: int,
          interleaved: bool) -> torch.Tensor:
    """Rotary embedding of xh [B, N, S, H] at positions p [B, S] (float32 result)."""
    c = cos[p][:, None, :, : rot // 2].to(torch.float32)  # [B, 1, S, rot/2]
    s_ = sin[p][:, None, :, : rot // 2].to(torch.float32)
    xf = xh.to(torch.float32)
    xr, rest = xf[..., :rot], xf[..., rot:]
    if interleaved:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
        out = torch.stack([x1 * c - x2 * s_, x2 * c + x1 * s_], -1).reshape(xr.shape)
    else:
        x1, x2 = xr[..., : rot // 2], xr[..., rot // 2:]
        out = torch.cat([x1 * c - x2 * s_, x2 * c + x1 * s_], -1)
    return torch.cat([out, rest], -1) if rest.shape[-1] else out


def _rotary(node: Node, ctx: BuildContext) -> Kernel:
    interleaved = bool(attr(node, "interleaved", 0))
    n_heads = int(attr(node, "num_heads", 0))
    rot_attr = int(attr(node, "rotary_embedding_dim", 0))
    # ``scale`` is ignored, as onnxruntime's CPU kernel does
    if int(attr(node, "is_packed_batching", 0)):
        raise unsupported(node, "is_packed_batching")

    def kernel(x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        bnsh = x.dim() == 4
        if bnsh:
            B, N, S, H = x.shape
            xh = x
        else:
            B, S, D = x.shape
            H = D // n_heads if n_heads else cos.shape[-1] * 2
            N = D // H
            xh = x.reshape(B, S, N, H).transpose(1, 2)
        rot = rot_attr or cos.shape[-1] * 2
        if pos.numel() == 1 and not (pos.dim() == 2 and B == 1 and S == 1):
            p = pos.reshape(-1)[0].long() + torch.arange(S)
            p = p.unsqueeze(0).expand(B, S)
        else:
            p = pos.long().reshape(B, S)
        out = _rope(xh, p, cos, sin, rot, interleaved)
        out = out.to(x.dtype)
        if not bnsh:
            out = out.transpose(1, 2).reshape(B, S, N * H)
        return out

    return kernel


# ----------------------------------------------------------------- GroupQueryAttention


def _gqa(node: Node, ctx: BuildContext) -> Kernel:
    """onnxruntime's GroupQueryAttention with separate past/present KV buffers [B, kvN, L, H].

    First prompt (``S == total_sequence_length``): every batch entry starts at position 0;
    otherwise entry b continues after ``seqlens_k[b] + 1 - S`` cached positions. The present
    buffers hold the valid past, then the new keys/values, then zeros.
    """
    N, kvN = int(attr(node, "num_heads", 0)), int(attr(node, "kv_num_heads", 0))
    if N <= 0 or kvN <= 0 or N % kvN:
        raise bad_model(node, "num_heads must be a positive multiple of kv_num_heads")
    scale_attr = float(attr(node, "scale", 0.0))
    softcap = float(attr(node, "softcap", 0.0))
    window = int(attr(node, "local_window_size", -1))
    rotary = bool(attr(node, "do_rotary", 0))
    interleaved = bool(attr(node, "rotary_interleaved", 0))
    if int(attr(node, "smooth_softmax", 0)):
        raise unsupported(node, "smooth_softmax")
    if int(attr(node, "qk_output", 0)):
        raise unsupported(node, "qk_output")

    def kernel(query: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None,
               past_k: torch.Tensor | None, past_v: torch.Tensor | None, seqlens_k: torch.Tensor,
               total_len: torch.Tensor, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None,
               pos_ids: torch.Tensor | None = None, attn_bias: torch.Tensor | None = None,
               head_sink: torch.Tensor | None = None, *_rest: Any) -> Any:
        if head_sink is not None:
            raise NotImplementedError("GroupQueryAttention with head_sink")
        B, S, D = query.shape
        if key is None:  # packed QKV
            H = D // (N + 2 * kvN)
            q, k, v = torch.split(query, [N * H, kvN * H, kvN * H], -1)
        else:
            assert value is not None
            H = D // N
            q, k, v = query, key, value
        q = q.reshape(B, S, N, H).transpose(1, 2)
        k = k.reshape(B, S, kvN, H).transpose(1, 2)
        v = v.reshape(B, S, kvN, H).transpose(1, 2)
        total = seqlens_k.long().reshape(B) + 1
        T_total = int(total_len.reshape(-1)[0])
        first = S == T_total
        past = torch.zeros_like(total) if first else total - S
        if rotary:
            assert cos is not None and sin is not None
            pos = pos_ids.long().reshape(B, S) if pos_ids is not None else past[:, None] + torch.arange(S)
            rot = cos.shape[-1] * 2
            q = _rope(q, pos, cos, sin, rot, interleaved).to(query.dtype)
            k = _rope(k, pos, cos, sin, rot, interleaved).to(query.dtype)
        P = past_k.shape[2] if past_k is not None else 0
        L = max(P, T_total)
        pk = query.new_zeros((B, kvN, L, H))
        pv = query.new_zeros((B, kvN, L, H))
        for b in range(B):
            n = int(past[b])
            if n and past_k is not None and past_v is not None:
                pk[b, :, :n] = past_k[b, :, :n]
                pv[b, :, :n] = past_v[b, :, :n]
            pk[b, :, n:n + S] = k[b]
            pv[b, :, n:n + S] = v[b]
        rep = N // kvN
        kk, vv = pk.repeat_interleave(rep, 1), pv.repeat_interleave(rep, 1)
        dt = query.dtype
        qf = q.float() if dt in _LOW else q
        kf, vf = (kk.float(), vv.float()) if dt in _LOW else (kk, vv)
        scale = scale_attr or 1.0 / math.sqrt(H)
        scores = torch.matmul(qf, kf.transpose(-1, -2)) * scale  # [B, N, S, L]
        if softcap > 0:
            scores = torch.tanh(scores / softcap) * softcap
        if attn_bias is not None:
            ab = attn_bias[..., :L].to(scores.dtype)
            if ab.shape[-1] < L:  # bias over the total length; later buffer slots are masked
                ab = torch.nn.functional.pad(ab, (0, L - ab.shape[-1]))
            scores = scores + ab
        j = torch.arange(L)
        causal_len = (past[:, None] + torch.arange(S) + 1)[:, None, :, None]  # [B, 1, S, 1]
        keep = j < causal_len
        if window > 0:
            keep = keep & (j >= causal_len - window)
        probs = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1)
        out = torch.matmul(probs, vf).transpose(1, 2).reshape(B, S, N * H).to(dt)
        return _outs(node, [out, pk, pv])

    return kernel


KERNELS: dict[str, Factory] = {
    MS + "Attention": _attention,
    MS + "MultiHeadAttention": _mha,
    MS + "RotaryEmbedding": _rotary,
    MS + "GroupQueryAttention": _gqa,
}
