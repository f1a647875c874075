"""CPU kernels: ONNX attention-family operators.

* ``Attention`` (opset 23, 24 with ``nonpad_kv_seqlen``, 25 with sliding windows): 3-D
  (``q_num_heads``/``kv_num_heads``) or 4-D inputs, grouped-query heads, bool or additive
  ``attn_mask`` (a short kv dimension is padded as masked), bottom-right (offset-aligned)
  ``is_causal``, ``scale``, ``softcap``, ``past_key``/``past_value`` → ``present_*``,
  ``qk_matmul_output_mode`` 0–3 and ``softmax_precision``. A query row for which every key
  is masked yields zeros (not NaN) in ``Y`` and in the mode-3 output.
* ``RotaryEmbedding`` (opset 23): 3-D (with ``num_heads``) or 4-D ``(B, H, S, D)`` input,
  optional ``position_ids``, ``interleaved``, ``rotary_embedding_dim``.
* ``LinearAttention`` (opset 27): the linear / gated / delta / gated-delta recurrences,
  computed step by step in float32.
* ``CausalConvWithState`` (opset 27): depthwise causal conv1d with a carried state and an
  optional SiLU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import BuildContext, Factory, Kernel, attr, bad_model, unsupported
from tensorkiln.ir import Node

Tensor = torch.Tensor

_SOFTMAX_PRECISIONS = {1: torch.float32, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


# ---------------------------------------------------------------- Attention

def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, S, H*D) → (B, H, S, D)."""
    b, s, hd = x.shape
    if hd % heads:
        raise ValueError(f"hidden size {hd} is not divisible by {heads} heads")
    return x.reshape(b, s, heads, hd // heads).transpose(1, 2)


def _neg_inf_where(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    zero = torch.zeros((), dtype=dtype)
    return torch.where(allowed, zero, torch.full((), -math.inf, dtype=dtype))


def _frontier(q_len: int, kv_len: int, offset: Tensor | int) -> Tensor:
    """``(i + offset) - j``: (q, kv) for a scalar offset, (B, 1, q, kv) for a per-batch one."""
    i = torch.arange(q_len).reshape(q_len, 1)
    j = torch.arange(kv_len).reshape(1, kv_len)
    if isinstance(offset, Tensor):
        return (i + offset.reshape(-1, 1, 1, 1).to(torch.int64)) - j
    return (i + offset) - j


def _softmax_guarded(x: Tensor) -> Tensor:
    """Softmax over the last axis; a row that is all ``-inf`` gives zeros, not NaN."""
    if x.dtype in (torch.float32, torch.float64):
        # torch's fused softmax: rows of -inf come out NaN, zeroed by the caller's guard
        # only if the bias masked them; catch the remaining ones (-inf logits) here
        y = torch.softmax(x, -1)
        if not torch.isnan(y).any():
            return y
    m = x.amax(-1, keepdim=True)
    m = torch.where(torch.isneginf(m), torch.zeros((), dtype=x.dtype), m)
    e = torch.exp(x - m)
    s = e.sum(-1, keepdim=True)
    s = torch.where(s == 0, torch.ones((), dtype=x.dtype), s)
    return e / s


def _attention(node: Node, ctx: BuildContext) -> Kernel:
    opset = node.opset
    n_out = len(node.outputs)
    scale_attr = attr(node, "scale")
    is_causal = bool(attr(node, "is_causal", 0))
    q_heads_attr = attr(node, "q_num_heads")
    kv_heads_attr = attr(node, "kv_num_heads")
    softcap = float(attr(node, "softcap", 0.0))
    mode = int(attr(node, "qk_matmul_output_mode", 0))
    sp = attr(node, "softmax_precision")
    left = int(attr(node, "left_window_size", -1)) if opset >= 25 else -1
    right = int(attr(node, "right_window_size", -1)) if opset >= 25 else -1
    if mode not in (0, 1, 2, 3):
        raise unsupported(node, f"qk_matmul_output_mode={mode}")
    if left < -1 or right < -1:
        raise bad_model(node, "left_window_size/right_window_size must be -1 or nonnegative")
    sm_dtype: torch.dtype | None = None
    if sp is not None:
        if int(sp) not in _SOFTMAX_PRECISIONS:
            raise unsupported(node, f"softmax_precision={sp}")
        sm_dtype = _SOFTMAX_PRECISIONS[int(sp)]
    windowed = left >= 0 or right >= 0
    want_qk = n_out >= 4
    # torch's fused attention when no intermediate is wanted and nothing changes the math
    fast_ok = not want_qk and softcap <= 0

    def k(
        Q: Tensor,
        K: Tensor,
        V: Tensor,
        mask: Tensor | None = None,
        past_k: Tensor | None = None,
        past_v: Tensor | None = None,
        nonpad: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        if (past_k is None) != (past_v is None):
            raise ValueError("past_key and past_value must be given together")
        if nonpad is not None and past_k is not None:
            raise ValueError("nonpad_kv_seqlen cannot be combined with past_key/past_value")
        three_d = Q.dim() == 3
        if three_d:
            if q_heads_attr is None or kv_heads_attr is None:
                raise ValueError("3-D inputs need the q_num_heads and kv_num_heads attributes")
            Q = _split_heads(Q, int(q_heads_attr))
            K = _split_heads(K, int(kv_heads_attr))
            V = _split_heads(V, int(kv_heads_attr))
        elif Q.dim() != 4 or K.dim() != 4 or V.dim() != 4:
            raise ValueError(f"Q, K, V must all be 3-D or 4-D, got ranks {Q.dim()}, {K.dim()}, {V.dim()}")
        dt = Q.dtype
        b, hq, q_len, d = Q.shape
        fast = fast_ok and dt in (torch.float32, torch.float64) and (sm_dtype is None or sm_dtype == dt)
        s = (1.0 / math.sqrt(d)) if scale_attr is None else float(scale_attr)
        s_sqrt = torch.tensor(math.sqrt(s), dtype=dt)

        if past_k is not None:
            K = torch.cat((past_k, K), 2)
            V = torch.cat((past_v, V), 2)  # type: ignore[arg-type]
        present_k, present_v = K, V
        kv_len = K.shape[2]
        # grouped-query heads: each KV head serves hq / hkv consecutive query heads
        hkv = K.shape[1]
        if hq != hkv and (hq % hkv or V.shape[1] != hkv):
            raise ValueError(f"{hq} query heads cannot share {hkv} key/value heads")

        if fast and is_causal and mask is None and nonpad is None and past_k is None and not windowed:
            # plain top-left causal mask (offset 0): the fused kernel builds it itself
            y = F.scaled_dot_product_attention(Q, K, V, is_causal=True, scale=s, enable_gqa=hq != hkv)
            if three_d:
                y = y.transpose(1, 2).reshape(b, q_len, -1)
            return y if n_out == 1 else (y, present_k, present_v)[:n_out]

        # ---- the additive bias (None: nothing masked)
        bias: Tensor | None = None
        if mask is not None:
            pad = kv_len - mask.shape[-1]
            if mask.dtype == torch.bool:
                if pad > 0:
                    mask = F.pad(mask, (0, pad), value=False)
                bias = _neg_inf_where(mask, dt)
            else:
                if pad > 0:
                    mask = F.pad(mask, (0, pad), value=-math.inf)
                bias = mask.to(dt)
        if nonpad is not None:
            offset: Tensor | int = nonpad.reshape(-1) - q_len
        else:
            offset = past_k.shape[2] if past_k is not None else 0
        if is_causal or windowed:
            diff = _frontier(q_len, kv_len, offset)  # (i + offset) - j
            allowed = None
            if is_causal:
                allowed = diff >= 0
            if left >= 0:
                a = diff <= left
                allowed = a if allowed is None else allowed & a
            if right >= 0:
                a = -diff <= right
                allowed = a if allowed is None else allowed & a
            assert allowed is not None
            frontier_bias = _neg_inf_where(allowed, dt)
            bias = frontier_bias if bias is None else bias + frontier_bias
        if nonpad is not None:
            valid = torch.arange(kv_len).reshape(1, kv_len) < nonpad.reshape(-1, 1).to(torch.int64)
            pad_bias = _neg_inf_where(valid, dt).reshape(b, 1, 1, kv_len)
            bias = pad_bias if bias is None else bias + pad_bias

        fully_masked = None
        if bias is not None:
            fully_masked = torch.isneginf(bias.amax(-1, keepdim=True))
            if not bool(fully_masked.any()):
                fully_masked = None

        if fast:
            # fused kernel (same math; scale applied once instead of sqrt on Q and K)
            y = F.scaled_dot_product_attention(Q, K, V, attn_mask=bias, scale=s, enable_gqa=hq != hkv)
            if fully_masked is not None:
                y = torch.where(fully_masked, torch.zeros((), dtype=dt), y)
            if three_d:
                y = y.transpose(1, 2).reshape(b, q_len, -1)
            return y if n_out == 1 else (y, present_k, present_v)[:n_out]

        if hq != hkv:
            K = K.repeat_interleave(hq // hkv, dim=1)
            V = V.repeat_interleave(hq // hkv, dim=1)

        qk = torch.matmul(Q * s_sqrt, (K * s_sqrt).transpose(-1, -2))
        qk_raw = qk
        if softcap > 0:
            qk = torch.tanh(qk / softcap) * softcap
        qk_out = None
        if want_qk and mode == 0:
            qk_out = qk_raw
        elif want_qk and mode == 1:
            qk_out = qk
        logits = qk if bias is None else qk + bias
        if want_qk and mode == 2:
            qk_out = logits
        if sm_dtype is not None and sm_dtype != dt:
            logits = logits.to(sm_dtype)
        probs = _softmax_guarded(logits)
        if fully_masked is not None:
            probs = torch.where(fully_masked, torch.zeros((), dtype=probs.dtype), probs)
        probs = probs.to(dt)
        if want_qk and mode == 3:
            qk_out = probs
        y = torch.matmul(probs, V)
        if three_d:
            y = y.transpose(1, 2).reshape(b, q_len, -1)
        if n_out == 1:
            return y
        outs: list[Tensor] = [y, present_k, present_v]
        if want_qk:
            assert qk_out is not None
            outs.append(qk_out.to(dt))
        return tuple(outs[:n_out])

    return k


# ---------------------------------------------------------------- RotaryEmbedding

def _rotary_embedding(node: Node, ctx: BuildContext) -> Kernel:
    interleaved = bool(attr(node, "interleaved", 0))
    rot_dim_attr = int(attr(node, "rotary_embedding_dim", 0))
    num_heads = int(attr(node, "num_heads", 0))

    def k(x: Tensor, cos: Tensor, sin: Tensor, pos: Tensor | None = None) -> Tensor:
        shape = x.shape
        if x.dim() == 4:  # (B, H, S, D) → work as (B, S, H, D)
            xs = x.transpose(1, 2)
        elif x.dim() == 3:
            if num_heads <= 0:
                raise ValueError("3-D input needs the num_heads attribute")
            b, s_, hidden = shape
            xs = x.reshape(b, s_, num_heads, hidden // num_heads)
        else:
            raise ValueError(f"input must be 3-D or 4-D, got rank {x.dim()}")
        d = xs.shape[-1]
        rd = rot_dim_attr or d
        half = rd // 2
        if pos is not None:
            cos = cos[pos]
            sin = sin[pos]
        if cos.shape[-1] != half or sin.shape[-1] != half:
            raise ValueError(f"cos/sin cache last dimension {cos.shape[-1]} != rotary_embedding_dim/2 = {half}")
        cos = cos.unsqueeze(2).to(x.dtype)  # (B, S, 1, half)
        sin = sin.unsqueeze(2).to(x.dtype)
        xr = xs[..., :rd]
        if interleaved:
            x1, x2 = xr[..., 0::2], xr[..., 1::2]
        else:
            x1, x2 = xr[..., :half], xr[..., half:]
        real = cos * x1 - sin * x2
        imag = sin * x1 + cos * x2
        if interleaved:
            rot = torch.stack((real, imag), -1).reshape(xr.shape)
        else:
            rot = torch.cat((real, imag), -1)
        out = torch.cat((rot, xs[..., rd:]), -1) if rd < d else rot
        if x.dim() == 4:
            return out.transpose(1, 2).contiguous()
        return out.reshape(shape)

    return k


# ---------------------------------------------------------------- LinearAttention

_UPDATE_RULES = ("linear", "gated", "delta", "gated_delta")


def _linear_attention(node: Node, ctx: BuildContext) -> Kernel:
    rule = attr(node, "update_rule", "gated_delta")
    if rule not in _UPDATE_RULES:
        raise unsupported(node, f"update_rule={rule!r} (expected one of {', '.join(_UPDATE_RULES)})")
    hq = attr(node, "q_num_heads")
    hkv = attr(node, "kv_num_heads")
    if hq is None or hkv is None:
        raise bad_model(node, "q_num_heads and kv_num_heads are required")
    hq, hkv = int(hq), int(hkv)
    if hq <= 0 or hkv <= 0 or hq % hkv:
        raise bad_model(node, f"q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hkv})")
    scale_attr = float(attr(node, "scale", 0.0))
    gating = rule in ("gated", "gated_delta")
    delta = rule in ("delta", "gated_delta")
    group = hq // hkv
    f32 = torch.float32

    def k(
        q: Tensor,
        key: Tensor,
        v: Tensor,
        past: Tensor | None = None,
        decay: Tensor | None = None,
        beta: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        if gating != (decay is not None):
            raise ValueError(f"update_rule {rule!r} {'requires' if gating else 'forbids'} the decay input")
        if delta != (beta is not None):
            raise ValueError(f"update_rule {rule!r} {'requires' if delta else 'forbids'} the beta input")
        b, t, _ = q.shape
        dk = q.shape[-1] // hq
        dv = v.shape[-1] // hkv
        q4 = _split_heads(q, hq).to(f32)  # (B, Hq, T, dk)
        k4 = _split_heads(key, hkv).to(f32)  # (B, Hkv, T, dk)
        v4 = _split_heads(v, hkv).to(f32)  # (B, Hkv, T, dv)
        g4 = None
        if decay is not None:
            if decay.shape[-1] == hkv:
                g4 = decay.reshape(b, t, hkv, 1).transpose(1, 2).to(f32)
            elif decay.shape[-1] == hkv * dk:
                g4 = _split_heads(decay, hkv).to(f32)
            else:
                raise ValueError(f"decay last dim {decay.shape[-1]} must be {hkv} or {hkv * dk}")
            g4 = torch.exp(g4)  # (B, Hkv, T, 1 or dk)
        b4 = None
        if beta is not None:
            bl = beta.shape[-1]
            if bl not in (hkv, 1):
                raise ValueError(f"beta last dim {bl} must be {hkv} or 1")
            b4 = beta.reshape(b, t, bl, 1).transpose(1, 2).to(f32)  # (B, Hkv|1, T, 1)
        if past is not None:
            if tuple(past.shape) != (b, hkv, dk, dv):
                raise ValueError(f"past_state shape {tuple(past.shape)} != {(b, hkv, dk, dv)}")
            state_dtype = past.dtype
            state = past.to(f32)
        else:
            state_dtype = q.dtype
            state = torch.zeros((b, hkv, dk, dv), dtype=f32)
        scale = scale_attr if scale_attr != 0.0 else 1.0 / math.sqrt(dk)
        # query heads grouped by the KV head they read: (B, Hkv, group, T, dk)
        qg = q4.reshape(b, hkv, group, t, dk)
        out = torch.empty((b, hkv, group, t, dv), dtype=f32)
        for i in range(t):
            if g4 is not None:
                state = state * g4[:, :, i, :].unsqueeze(-1)
            k_t = k4[:, :, i, :]
            v_t = v4[:, :, i, :]
            if b4 is not None:
                retrieved = torch.einsum("bhdm,bhd->bhm", state, k_t)
                v_t = b4[:, :, i, :] * (v_t - retrieved)
            state = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
            out[:, :, :, i, :] = torch.einsum("bhgd,bhdm->bhgm", qg[:, :, :, i, :], state) * scale
        y = out.reshape(b, hq, t, dv).transpose(1, 2).reshape(b, t, hq * dv).to(q.dtype)
        return y, state.to(state_dtype)

    return k


# ---------------------------------------------------------------- CausalConvWithState

def _causal_conv_with_state(node: Node, ctx: BuildContext) -> Kernel:
    act = attr(node, "activation", "none")
    if act not in ("none", "silu", "swish"):
        raise unsupported(node, f"activation={act!r} (expected 'none', 'silu' or 'swish')")
    silu = act != "none"

    def k(
        x: Tensor, w: Tensor, bias: Tensor | None = None, past: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if x.dim() != 3 or w.dim() != 3:
            raise ValueError("input must be (B, C, L) and weight (C, 1, k)")
        b, c, _ = x.shape
        ks = w.shape[2]
        if past is None:
            past = torch.zeros((b, c, ks - 1), dtype=x.dtype)
        padded = torch.cat((past.to(x.dtype), x), 2)
        y = F.conv1d(padded, w, bias, groups=c)
        if silu:
            y = F.silu(y.float()).to(x.dtype)
        present = padded[:, :, padded.shape[2] - (ks - 1):]
        return y, present.clone()

    return k


KERNELS: dict[str, Factory] = {
    "Attention": _attention,
    "RotaryEmbedding": _rotary_embedding,
    "LinearAttention": _linear_attention,
    "CausalConvWithState": _causal_conv_with_state,
}
