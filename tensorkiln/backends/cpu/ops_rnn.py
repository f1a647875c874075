"""CPU kernels: rnn operators (LSTM, GRU, RNN).

Two paths per node:

* **fast**: torch's fused ATen recurrences (``torch._VF.lstm`` / ``gru`` / ``rnn_tanh`` /
  ``rnn_relu``; for short sequences the fused cells ``torch.lstm_cell`` etc., one call
  per step, see ``_use_cells``) when the node uses the default
  activations (RNN: Tanh or Relu), no clip, no peepholes (or all-zero constant ones), no
  ``input_forget``, GRU with ``linear_before_reset=1``; per-batch ``sequence_lens`` (all
  above zero) use torch's packed-sequence form of the same ops. Weights are reordered to
  torch's gate order (LSTM iofc -> ifgo, GRU zrh -> rzn) once in the factory when they are
  constants.
* **general** (``ops_rnn_steps``): the input projection of all steps in one matmul, then
  a per-step loop in torch, with any activations and per-batch sequence lengths.

float16/bfloat16 are computed in float32 and cast back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from tensorkiln.backends.cpu.base import (
    BuildContext,
    Factory,
    Kernel,
    attr,
    bad_model,
    const_input,
    has_input,
    torch_const,
)
from tensorkiln.backends.cpu.ops_rnn_steps import (
    SPEC,
    Weights,
    activations,
    gather_time,
    run_direction,
    seq_index,
)
from tensorkiln.ir import Node

# onnx gate blocks -> torch gate blocks
_TORCH_ORDER = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}
# Short sequences run one fused ATen cell call per step: the whole-sequence op (oneDNN
# for float32 LSTM) has a per-call cost that grows with the weights (measured, 1 thread:
# H=500 about 6 ms, H=64 about 0.1 ms), a cell call costs tens of microseconds. Cells
# are used up to max(3, weight elements per direction / _CELL_ELEMS_PER_STEP) steps.
_CELL_MIN_STEPS = 3
_CELL_ELEMS_PER_STEP = 250_000


def _use_cells(w: Weights, T: int) -> bool:
    assert w.fast is not None
    elems = w.fast[0].numel() + w.fast[1].numel()
    return T <= max(_CELL_MIN_STEPS, elems // _CELL_ELEMS_PER_STEP)


def _reorder(t: torch.Tensor, order: list[int], hidden: int) -> torch.Tensor:
    if order == list(range(len(order))):
        return t.contiguous()
    return torch.cat([t[k * hidden:(k + 1) * hidden] for k in order], 0).contiguous()


def _prep(op: str, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor | None,
          P: torch.Tensor | None, dtype: torch.dtype, want_fast: bool) -> Weights:
    gates = SPEC[op][0]
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
    return Weights(Ws, Rs, Wbs, Rbs, Ps, fast)


def _compute_dtype(dt: torch.dtype) -> torch.dtype:
    return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt


_FAST_FN = {
    "LSTM": lambda *a: torch._VF.lstm(*a),
    "GRU": lambda *a: torch._VF.gru(*a),
    "tanh": lambda *a: torch._VF.rnn_tanh(*a),
    "relu": lambda *a: torch._VF.rnn_relu(*a),
}


def _run_packed(op: str, fn_key: str, w: Weights, dirs: list[str], x: torch.Tensor, h0: torch.Tensor,
                c0: torch.Tensor | None, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Like ``_run_fast`` for per-batch lengths (all > 0), with torch's packed sequences.

    Packed recurrences stop each sequence at its length and run the backward direction
    from the sequence's own last step, exactly ONNX's ``sequence_lens`` semantics;
    padding positions of Y come back as zeros.
    """
    assert w.fast is not None
    T = x.shape[0]
    idx = None
    if dirs == ["reverse"]:  # a forward pass over each sequence reversed within its length
        idx = seq_index(lens, T)
        x = gather_time(x, idx)
    packed = pack_padded_sequence(x, lens, enforce_sorted=False)
    order, unorder = packed.sorted_indices, packed.unsorted_indices
    assert order is not None and unorder is not None
    h = h0.index_select(1, order).contiguous()
    hx: Any = (h, c0.index_select(1, order).contiguous()) if c0 is not None else h
    res = _FAST_FN[fn_key](packed.data, packed.batch_sizes, hx, w.fast, True, 1, 0.0, False, len(dirs) == 2)
    out = PackedSequence(res[0], packed.batch_sizes, order, unorder)
    Y, _ = pad_packed_sequence(out, total_length=T)  # [T, B, ndir*H]
    Y = Y.reshape(T, Y.shape[1], len(dirs), -1).transpose(1, 2)
    if idx is not None:
        Y = gather_time(Y.squeeze(1), idx).unsqueeze(1)
    Yc = res[2].index_select(1, unorder) if c0 is not None else None
    return Y, res[1].index_select(1, unorder), Yc


_CELL_FN = {
    "LSTM": torch.lstm_cell,
    "GRU": torch.gru_cell,
    "tanh": torch.rnn_tanh_cell,
    "relu": torch.rnn_relu_cell,
}


def _cast(t: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dt else t.to(dt)


def _stack(ts: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    return ts[0].unsqueeze(dim) if len(ts) == 1 else torch.stack(ts, dim)


def _run_cells(op: str, fn_key: str, w: Weights, dirs: list[str], x: torch.Tensor,
               h0: torch.Tensor, c0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Like ``_run_fast``, one fused cell call per step (short sequences)."""
    assert w.fast is not None
    cell: Any = _CELL_FN[fn_key]
    T = x.shape[0]
    ys, hs, cs = [], [], []
    for d, dname in enumerate(dirs):
        w_ih, w_hh, b_ih, b_hh = w.fast[4 * d:4 * d + 4]
        steps = range(T - 1, -1, -1) if dname == "reverse" else range(T)
        h = h0[d]
        c = c0[d] if c0 is not None else None
        out: list[torch.Tensor] = [h] * T
        for t in steps:
            if c is not None:
                h, c = cell(x[t], (h, c), w_ih, w_hh, b_ih, b_hh)
            else:
                h = cell(x[t], h, w_ih, w_hh, b_ih, b_hh)
            out[t] = h
        ys.append(_stack(out))
        hs.append(h)
        cs.append(c)
    Yc = _stack(cs) if c0 is not None else None  # type: ignore[arg-type]
    return _stack(ys, 1), _stack(hs), Yc


def _run_fast(op: str, fn_key: str, w: Weights, dirs: list[str], x: torch.Tensor,
              h0: torch.Tensor, c0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """x [T, B, I]; h0/c0 [ndir, B, H]; returns Y [T, ndir, B, H], Y_h, Y_c."""
    assert w.fast is not None
    if _use_cells(w, x.shape[0]):
        return _run_cells(op, fn_key, w, dirs, x, h0, c0)
    fn = _FAST_FN[fn_key]
    hx: Any = (h0.contiguous(), c0.contiguous()) if c0 is not None else h0.contiguous()
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
    acts, act_names = activations(node, ndir)
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
    defaults = SPEC[op][1]
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
    pre: dict[torch.dtype, Weights] = {}
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
        x = _cast(X, cdt)
        if layout:
            x = x.transpose(0, 1)
        T, Bn = x.shape[0], x.shape[1]
        hidden = w.R[0].shape[-1]
        if init_h is None:
            h0 = x.new_zeros((ndir, Bn, hidden))
        else:
            h0 = _cast(init_h, cdt)
            if layout:
                h0 = h0.transpose(0, 1)
        c0 = None
        if op == "LSTM":
            if init_c is None:
                c0 = x.new_zeros((ndir, Bn, hidden))
            else:
                c0 = _cast(init_c, cdt)
                if layout:
                    c0 = c0.transpose(0, 1)
        lens = None
        if seq_lens is not None and seq_lens.numel() and not bool((seq_lens == T).all()):
            lens = seq_lens.to(torch.int64)
        if fast_key is not None and lens is None and T > 0:
            Y, Yh, Yc = _run_fast(op, fast_key, w, dirs, x, h0, c0)
        elif fast_key is not None and lens is not None and bool((lens > 0).all()) and int(lens.max()) <= T:
            Y, Yh, Yc = _run_packed(op, fast_key, w, dirs, x, h0, c0, lens)
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
                        idx = seq_index(lens, T)
                        xd = gather_time(x, idx)
                Yd, hd, cd = run_direction(
                    op, cfg, acts[d], w, d, xd, h0[d], None if c0 is None else c0[d], mask
                )
                if dname == "reverse":
                    Yd = torch.flip(Yd, [0]) if idx is None else gather_time(Yd, idx)
                if lens is not None and bool((lens == 0).any()):
                    empty = (lens == 0).unsqueeze(-1)  # like onnxruntime: zero final state
                    hd = hd.masked_fill(empty, 0)
                    cd = None if cd is None else cd.masked_fill(empty, 0)
                ys.append(Yd)
                hs.append(hd)
                cs.append(cd)
            Y = _stack(ys, 1)
            Yh = _stack(hs)
            Yc = _stack(cs) if op == "LSTM" else None  # type: ignore[arg-type]
        if layout:
            Y = Y.permute(2, 0, 1, 3)
            Yh = Yh.transpose(0, 1)
            if Yc is not None:
                Yc = Yc.transpose(0, 1)
        outs = [Y, Yh, Yc][:n_out]
        outs = [_cast(o, out_dt).contiguous() if o is not None else None for o in outs]
        return outs[0] if n_out == 1 else tuple(outs)

    return kernel


KERNELS: dict[str, Factory] = {
    "LSTM": _rnn_factory,
    "GRU": _rnn_factory,
    "RNN": _rnn_factory,
}
