"""CPU kernels: rnn operators (LSTM, GRU, RNN).

Two paths per node:

* **fast**: torch's fused ATen recurrences (``torch._VF.lstm`` / ``gru`` / ``rnn_tanh`` /
  ``rnn_relu``) when the node uses the default activations (RNN: Tanh or Relu), no clip,
  no peepholes (or all-zero constant ones), no ``input_forget``, GRU with
  ``linear_before_reset=1``, and every sequence is full length (checked per call).
  Weights are reordered to torch's gate order (LSTM iofc -> ifgo, GRU zrh -> rzn) once
  in the factory when they are constants.
* **general**: the input projection of all steps in one matmul, then a per-step loop in
  torch, with per-batch sequence lengths (steps past a sequence's end give zeros in Y and
  leave the state unchanged; the reverse direction runs each sequence backwards from its
  own last valid step).

float16/bfloat16 are computed in float32 and cast back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import (
    BuildContext,
    Factory,
    Kernel,
    attr,
    bad_model,
    const_input,
    has_input,
    torch_const,
    unsupported,
)
from tensorkiln.ir import Node

Act = Callable[[torch.Tensor], torch.Tensor]

# op -> (gates, default activations per direction)
_SPEC: dict[str, tuple[int, list[str]]] = {
    "LSTM": (4, ["sigmoid", "tanh", "tanh"]),
    "GRU": (3, ["sigmoid", "tanh"]),
    "RNN": (1, ["tanh"]),
}
# onnx gate blocks -> torch gate blocks
_TORCH_ORDER = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}

# name -> (number of alphas, number of betas, default alpha, default beta)
_ACT_ARGS: dict[str, tuple[int, int, float, float]] = {
    "affine": (1, 1, 1.0, 0.0),
    "relu": (0, 0, 0.0, 0.0),
    "leakyrelu": (1, 0, 0.01, 0.0),
    "thresholdedrelu": (1, 0, 1.0, 0.0),
    "tanh": (0, 0, 0.0, 0.0),
    "scaledtanh": (1, 1, 1.0, 1.0),
    "sigmoid": (0, 0, 0.0, 0.0),
    "hardsigmoid": (1, 1, 0.2, 0.5),
    "elu": (1, 0, 1.0, 0.0),
    "softsign": (0, 0, 0.0, 0.0),
    "softplus": (0, 0, 0.0, 0.0),
}


def _make_act(name: str, a: float, b: float) -> Act:
    if name == "sigmoid":
        return torch.sigmoid
    if name == "tanh":
        return torch.tanh
    if name == "relu":
        return torch.relu
    if name == "affine":
        return lambda x: x * a + b
    if name == "leakyrelu":
        return lambda x: F.leaky_relu(x, a)
    if name == "thresholdedrelu":
        return lambda x: torch.where(x > a, x, torch.zeros((), dtype=x.dtype))
    if name == "scaledtanh":
        return lambda x: torch.tanh(x * b) * a
    if name == "hardsigmoid":
        return lambda x: torch.clamp(x * a + b, 0.0, 1.0)
    if name == "elu":
        return lambda x: F.elu(x, a)
    if name == "softsign":
        return lambda x: x / (1 + x.abs())
    assert name == "softplus"
    return F.softplus


def _activations(node: Node, ndir: int) -> tuple[list[list[Act]], list[list[str]]]:
    n_per, defaults = _SPEC[node.op_type][0], _SPEC[node.op_type][1]
    n_per = len(defaults)
    names = [str(s).lower() for s in attr(node, "activations", [])] or defaults * ndir
    if len(names) == n_per and ndir == 2:
        names = names * 2
    if len(names) != n_per * ndir:
        raise bad_model(node, f"activations lists {len(names)} functions, expected {n_per * ndir}")
    alphas = list(attr(node, "activation_alpha", []) or [])
    betas = list(attr(node, "activation_beta", []) or [])
    acts: list[Act] = []
    for nm in names:
        if nm not in _ACT_ARGS:
            raise unsupported(node, f"activation function {nm!r}")
        na, nb, da, db = _ACT_ARGS[nm]
        a = float(alphas.pop(0)) if na and alphas else da
        b = float(betas.pop(0)) if nb and betas else db
        acts.append(_make_act(nm, a, b))
    return [acts[d * n_per:(d + 1) * n_per] for d in range(ndir)], [
        names[d * n_per:(d + 1) * n_per] for d in range(ndir)
    ]


@dataclass
class _Weights:
    W: list[torch.Tensor]  # per direction [G*H, I]
    R: list[torch.Tensor]  # [G*H, H]
    Wb: list[torch.Tensor]  # [G*H]
    Rb: list[torch.Tensor]
    P: list[torch.Tensor] | None  # [3H] (LSTM)
    fast: list[torch.Tensor] | None  # torch parameter list, directions in order


def _reorder(t: torch.Tensor, order: list[int], hidden: int) -> torch.Tensor:
    if order == list(range(len(order))):
        return t.contiguous()
    return torch.cat([t[k * hidden:(k + 1) * hidden] for k in order], 0).contiguous()


def _prep(op: str, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor | None,
          P: torch.Tensor | None, dtype: torch.dtype, want_fast: bool) -> _Weights:
    gates = _SPEC[op][0]
    W = W.to(dtype)
    R = R.to(dtype)
    hidden = R.shape[-1]
    ndir = W.shape[0]
    if B is None:
        B = torch.zeros(ndir, 2 * gates * hidden, dtype=dtype)
    B = B.to(dtype)
    Ws = [W[d] for d in range(ndir)]
    Rs = [R[d] for d in range(ndir)]
    Wbs = [B[d, : gates * hidden] for d in range(ndir)]
    Rbs = [B[d, gates * hidden:] for d in range(ndir)]
    Ps = None if P is None else [P.to(dtype)[d] for d in range(ndir)]
    fast = None
    if want_fast:
        order = _TORCH_ORDER[op]
        fast = []
        for d in range(ndir):
            fast += [_reorder(x, order, hidden) for x in (Ws[d], Rs[d], Wbs[d], Rbs[d])]
    return _Weights(Ws, Rs, Wbs, Rbs, Ps, fast)


def _compute_dtype(dt: torch.dtype) -> torch.dtype:
    return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt


def _seq_index(lens: torch.Tensor, T: int) -> torch.Tensor:
    """[T, B] time index that runs each sequence backwards within its own length."""
    t = torch.arange(T).unsqueeze(1)
    lens = lens.to(torch.int64).unsqueeze(0)
    return torch.where(t < lens, lens - 1 - t, t)


def _gather_time(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 0, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _run_direction(op: str, cfg: dict[str, Any], acts: list[Act], w: _Weights, d: int,
                   x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None,
                   mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One direction over x [T, B, I] in processing order; returns Y [T, B, H], h, c."""
    T = x.shape[0]
    hidden = h.shape[-1]
    clip = cfg["clip"]
    W, R, Wb, Rb = w.W[d], w.R[d], w.Wb[d], w.Rb[d]

    def cl(v: torch.Tensor) -> torch.Tensor:
        return v if clip is None else torch.clamp(v, -clip, clip)

    ys: list[torch.Tensor] = []
    if op == "LSTM":
        assert c is not None
        fa, ga, ha = acts
        gx = F.linear(x, W, Wb + Rb)
        P = w.P[d] if w.P is not None else None
        pi, po, pf = (None, None, None) if P is None else P.split(hidden)
        for t in range(T):
            g = torch.addmm(gx[t], h, R.t())
            gi, go, gf, gc = g.split(hidden, -1)
            if pi is not None:
                gi = gi + pi * c
                gf = gf + pf * c
            i = fa(cl(gi))
            f = 1 - i if cfg["input_forget"] else fa(cl(gf))
            c_new = f * c + i * ga(cl(gc))
            if po is not None:
                go = go + po * c_new
            h_new = fa(cl(go)) * ha(c_new)
            if mask is not None:
                m = mask[t]
                c = torch.where(m, c_new, c)
                h = torch.where(m, h_new, h)
                ys.append(torch.where(m, h_new, torch.zeros((), dtype=h.dtype)))
            else:
                c, h = c_new, h_new
                ys.append(h)
    elif op == "GRU":
        fa, ga = acts
        lbr = cfg["linear_before_reset"]
        zero = torch.zeros(hidden, dtype=Rb.dtype)
        if lbr:
            gx = F.linear(x, W, Wb + torch.cat([Rb[: 2 * hidden], zero]))
            rb = torch.cat([zero, zero, Rb[2 * hidden:]])
        else:
            gx = F.linear(x, W, Wb + Rb)
            R_zr, R_h = R[: 2 * hidden], R[2 * hidden:]
        for t in range(T):
            gxz, gxr, gxh = gx[t].split(hidden, -1)
            if lbr:
                gh = torch.addmm(rb, h, R.t())
                ghz, ghr, ghh = gh.split(hidden, -1)
                z = fa(cl(gxz + ghz))
                r = fa(cl(gxr + ghr))
                n = ga(cl(gxh + r * ghh))
            else:
                ghz, ghr = (h @ R_zr.t()).split(hidden, -1)
                z = fa(cl(gxz + ghz))
                r = fa(cl(gxr + ghr))
                n = ga(cl(gxh + (r * h) @ R_h.t()))
            h_new = (1 - z) * n + z * h
            if mask is not None:
                m = mask[t]
                h = torch.where(m, h_new, h)
                ys.append(torch.where(m, h_new, torch.zeros((), dtype=h.dtype)))
            else:
                h = h_new
                ys.append(h)
    else:
        (fa,) = acts
        gx = F.linear(x, W, Wb + Rb)
        for t in range(T):
            h_new = fa(cl(torch.addmm(gx[t], h, R.t())))
            if mask is not None:
                m = mask[t]
                h = torch.where(m, h_new, h)
                ys.append(torch.where(m, h_new, torch.zeros((), dtype=h.dtype)))
            else:
                h = h_new
                ys.append(h)
    if ys:
        Y = torch.stack(ys)
    else:
        Y = x.new_zeros((0, x.shape[1], hidden))
    return Y, h, c


_FAST_FN = {
    "LSTM": lambda *a: torch._VF.lstm(*a),
    "GRU": lambda *a: torch._VF.gru(*a),
    "tanh": lambda *a: torch._VF.rnn_tanh(*a),
    "relu": lambda *a: torch._VF.rnn_relu(*a),
}


def _run_fast(op: str, fn_key: str, w: _Weights, dirs: list[str], x: torch.Tensor,
              h0: torch.Tensor, c0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """x [T, B, I]; h0/c0 [ndir, B, H]; returns Y [T, ndir, B, H], Y_h, Y_c."""
    assert w.fast is not None
    fn = _FAST_FN[fn_key]
    hx: Any = (h0.contiguous(), c0.contiguous()) if op == "LSTM" else h0.contiguous()
    bidir = len(dirs) == 2
    reverse = dirs == ["reverse"]
    if reverse:
        x = torch.flip(x, [0])
    res = fn(x.contiguous(), hx, w.fast, True, 1, 0.0, False, bidir, False)
    out = res[0]
    T, Bn = out.shape[0], out.shape[1]
    Y = out.reshape(T, Bn, len(dirs), -1).transpose(1, 2)
    if reverse:
        Y = torch.flip(Y, [0])
    return Y, res[1], res[2] if op == "LSTM" else None


def _rnn_factory(node: Node, ctx: BuildContext) -> Kernel:
    op = node.op_type
    direction = str(attr(node, "direction", "forward"))
    if direction not in ("forward", "reverse", "bidirectional"):
        raise bad_model(node, f"direction {direction!r}")
    dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    ndir = len(dirs)
    acts, act_names = _activations(node, ndir)
    clip = attr(node, "clip")
    layout = int(attr(node, "layout", 0))
    cfg = {
        "clip": None if clip is None else float(clip),
        "input_forget": bool(attr(node, "input_forget", 0)) if op == "LSTM" else False,
        "linear_before_reset": int(attr(node, "linear_before_reset", 0)) if op == "GRU" else 0,
    }
    n_out = len(node.outputs)
    has_P = op == "LSTM" and has_input(node, 7)
    p_const = const_input(node, 7) if has_P else None
    if p_const is not None and not np.any(p_const):
        has_P = False  # all-zero peepholes change nothing
    fast_key: str | None = None
    defaults = _SPEC[op][1]
    if (
        cfg["clip"] is None
        and not cfg["input_forget"]
        and not has_P
        and (op != "GRU" or cfg["linear_before_reset"])
    ):
        if op == "RNN":
            if all(n == act_names[0] for n in act_names) and act_names[0][0] in ("tanh", "relu"):
                fast_key = act_names[0][0]
        elif all(n == defaults for n in act_names):
            fast_key = op

    consts = [const_input(node, i) if has_input(node, i) else None for i in range(4)]
    pre: dict[torch.dtype, _Weights] = {}
    if consts[1] is not None and consts[2] is not None and (not has_input(node, 3) or consts[3] is not None):
        if has_P and p_const is None:
            pass  # peepholes computed at run time: prepare per call
        else:
            wdt = torch_const(consts[1]).dtype
            cdt = _compute_dtype(wdt)
            pre[cdt] = _prep(
                op, torch_const(consts[1]), torch_const(consts[2]),
                torch_const(consts[3]) if consts[3] is not None else None,
                torch_const(p_const) if has_P and p_const is not None else None,
                cdt, fast_key is not None,
            )

    def kernel(X: torch.Tensor, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor | None = None,
               seq_lens: torch.Tensor | None = None, init_h: torch.Tensor | None = None,
               *rest: torch.Tensor | None) -> Any:
        init_c = rest[0] if op == "LSTM" and rest else None
        P = rest[1] if op == "LSTM" and len(rest) > 1 and has_P else None
        out_dt = X.dtype
        cdt = _compute_dtype(out_dt)
        w = pre.get(cdt)
        if w is None:
            w = _prep(op, W, R, B, P, cdt, fast_key is not None)
        x = X.to(cdt)
        if layout:
            x = x.transpose(0, 1)
        T, Bn = x.shape[0], x.shape[1]
        hidden = w.R[0].shape[-1]
        if init_h is None:
            h0 = x.new_zeros((ndir, Bn, hidden))
        else:
            h0 = init_h.to(cdt)
            if layout:
                h0 = h0.transpose(0, 1)
        c0 = None
        if op == "LSTM":
            if init_c is None:
                c0 = x.new_zeros((ndir, Bn, hidden))
            else:
                c0 = init_c.to(cdt)
                if layout:
                    c0 = c0.transpose(0, 1)
        lens = None
        if seq_lens is not None and seq_lens.numel() and not bool((seq_lens == T).all()):
            lens = seq_lens.to(torch.int64)
        if fast_key is not None and lens is None and T > 0:
            Y, Yh, Yc = _run_fast(op, fast_key, w, dirs, x, h0, c0)
        else:
            ys, hs, cs = [], [], []
            mask = None
            if lens is not None:
                mask = (torch.arange(T).unsqueeze(1) < lens.unsqueeze(0)).unsqueeze(-1)
            for d, dname in enumerate(dirs):
                xd = x
                idx = None
                if dname == "reverse":
                    if lens is None:
                        xd = torch.flip(x, [0])
                    else:
                        idx = _seq_index(lens, T)
                        xd = _gather_time(x, idx)
                Yd, hd, cd = _run_direction(
                    op, cfg, acts[d], w, d, xd, h0[d], None if c0 is None else c0[d], mask
                )
                if dname == "reverse":
                    Yd = torch.flip(Yd, [0]) if idx is None else _gather_time(Yd, idx)
                if lens is not None and bool((lens == 0).any()):
                    empty = (lens == 0).unsqueeze(-1)  # like onnxruntime: zero final state
                    hd = hd.masked_fill(empty, 0)
                    cd = None if cd is None else cd.masked_fill(empty, 0)
                ys.append(Yd)
                hs.append(hd)
                cs.append(cd)
            Y = torch.stack(ys, 1)
            Yh = torch.stack(hs)
            Yc = torch.stack(cs) if op == "LSTM" else None  # type: ignore[arg-type]
        if layout:
            Y = Y.permute(2, 0, 1, 3)
            Yh = Yh.transpose(0, 1)
            if Yc is not None:
                Yc = Yc.transpose(0, 1)
        outs = [Y, Yh, Yc][:n_out]
        outs = [o.to(out_dt).contiguous() if o is not None else None for o in outs]
        return outs[0] if n_out == 1 else tuple(outs)

    return kernel


KERNELS: dict[str, Factory] = {
    "LSTM": _rnn_factory,
    "GRU": _rnn_factory,
    "RNN": _rnn_factory,
}
