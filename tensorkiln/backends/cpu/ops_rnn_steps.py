"""The general (per-step) path of the LSTM/GRU/RNN kernels in ``ops_rnn``.

A helper module, no kernels of its own: activation functions with their alpha/beta
arguments, the per-direction step loop with any activations, clip, peepholes,
``input_forget``, both GRU forms and per-batch sequence lengths (steps past a sequence's
end give zeros in Y and leave the state unchanged; the reverse direction runs each
sequence backwards from its own last valid step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tensorkiln.backends.cpu.base import attr, bad_model, unsupported
from tensorkiln.ir import Node

Act = Callable[[torch.Tensor], torch.Tensor]

# op -> (gates, default activations per direction)
SPEC: dict[str, tuple[int, list[str]]] = {
    "LSTM": (4, ["sigmoid", "tanh", "tanh"]),
    "GRU": (3, ["sigmoid", "tanh"]),
    "RNN": (1, ["tanh"]),
}
# name -> (number of alphas, number of betas, default alpha, default beta)
ACT_ARGS: dict[str, tuple[int, int, float, float]] = {
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


def make_act(name: str, a: float, b: float) -> Act:
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


def activations(node: Node, ndir: int) -> tuple[list[list[Act]], list[list[str]]]:
    n_per, defaults = SPEC[node.op_type][0], SPEC[node.op_type][1]
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
        if nm not in ACT_ARGS:
            raise unsupported(node, f"activation function {nm!r}")
        na, nb, da, db = ACT_ARGS[nm]
        a = float(alphas.pop(0)) if na and alphas else da
        b = float(betas.pop(0)) if nb and betas else db
        acts.append(make_act(nm, a, b))
    return [acts[d * n_per:(d + 1) * n_per] for d in range(ndir)], [
        names[d * n_per:(d + 1) * n_per] for d in range(ndir)
    ]


@dataclass
class Weights:
    W: list[torch.Tensor]  # per direction [G*H, I]
    R: list[torch.Tensor]  # [G*H, H]
    Wb: list[torch.Tensor]  # [G*H]
    Rb: list[torch.Tensor]
    P: list[torch.Tensor] | None  # [3H] (LSTM)
    fast: list[torch.Tensor] | None  # torch parameter list, directions in order


def seq_index(lens: torch.Tensor, T: int) -> torch.Tensor:
    """[T, B] time index that runs each sequence backwards within its own length."""
    t = torch.arange(T).unsqueeze(1)
    lens = lens.to(torch.int64).unsqueeze(0)
    return torch.where(t < lens, lens - 1 - t, t)


def gather_time(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 0, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def run_direction(op: str, cfg: dict[str, Any], acts: list[Act], w: Weights, d: int,
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
            if pi is not None and pf is not None:
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
