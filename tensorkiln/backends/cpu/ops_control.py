"""CPU kernels: control flow (If, Loop, Scan).

Bodies are compiled once in the factory with ``ctx.compile_subgraph``; a compiled body
takes ``[formal inputs..., captures in program.captures order]``. The values a body reads
from outer scopes arrive as the owning node's trailing inputs (after its
``_n_onnx_inputs`` ONNX inputs); each body's captures are mapped to those positions at
build time by identity (after repairing captures a pass left stale, see
``_repair_captures``), so a call only indexes a tuple.

Sequence and Optional values are not tensors here: bodies that use them fail to build in
their own nodes; opset-8 Scan with ragged ``sequence_lens`` is rejected at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tensorkiln.backends.cpu.base import (
    BuildContext,
    Factory,
    Kernel,
    SubProgram,
    attr,
    bad_model,
    torch_dtype,
    unsupported,
)
from tensorkiln.errors import UnsupportedOpError
from tensorkiln.ir import Graph, Node, Value


def _n_onnx(node: Node) -> int:
    return int(node.attrs.get("_n_onnx_inputs", len(node.inputs)))


def _body(node: Node, name: str) -> Graph:
    g = node.subgraphs.get(name)
    if g is None:
        raise bad_model(node, f"missing graph attribute {name!r}")
    return g


def _repair_captures(node: Node) -> None:
    """Point each body's captures at the values the node actually passes.

    A pass that replaces an outer value (``Graph.replace_all_uses``) rewrites the node's
    trailing inputs and the body nodes that read it, but not ``Graph.captures``. The
    node's trailing inputs keep the frontend's order (the union of the bodies' captures,
    body by body), so a stale capture is replaced by the input at its union position.
    """
    n = _n_onnx(node)
    extras = node.inputs[n:]
    union: list[Value] = []
    for sg in node.subgraphs.values():
        for c in sg.captures:
            if all(c is not u for u in union):
                union.append(c)
    if len(union) != len(extras):
        return
    for sg in node.subgraphs.values():
        for k, c in enumerate(sg.captures):
            if all(c is not e for e in extras):
                new = extras[next(i for i, u in enumerate(union) if u is c)]
                if new is not None:
                    sg.captures[k] = new


def _capture_positions(node: Node, prog: SubProgram) -> list[int]:
    """Positions in ``node.inputs`` of the values ``prog`` expects as captures."""
    n = _n_onnx(node)
    extras = node.inputs[n:]
    pos = []
    for c in prog.captures:
        j = next((k for k, e in enumerate(extras) if e is c), None)
        if j is None:
            raise bad_model(node, f"subgraph reads outer value {c.name!r}, which the node does not pass")
        pos.append(n + j)
    return pos


def _compile(node: Node, ctx: BuildContext, name: str) -> tuple[SubProgram, list[int], Graph]:
    g = _body(node, name)
    for v in [*g.inputs, *g.outputs]:
        if v.dtype is not None and v.dtype.short in ("string",):
            raise unsupported(node, f"body {name!r} has a string input/output")
    _repair_captures(node)
    prog = ctx.compile_subgraph(g)
    return prog, _capture_positions(node, prog), g


def _const_outputs(g: Graph) -> list[int]:
    """Body outputs that are constants: copied before they leave the body."""
    return [i for i, v in enumerate(g.outputs) if v.const is not None]


def _copy_consts(outs: list[torch.Tensor], idx: list[int]) -> list[torch.Tensor]:
    if idx:
        outs = list(outs)
        for i in idx:
            outs[i] = outs[i].clone()
    return outs


def _scalar_bool(t: torch.Tensor) -> bool:
    if t.numel() != 1:
        raise ValueError(f"condition must hold one element, got shape {tuple(t.shape)}")
    return bool(t.reshape(()).item())


def _pack(outs: Sequence[torch.Tensor], n_out: int) -> Any:
    if n_out == 1:
        return outs[0]
    return tuple(outs)


def _empty_like_value(v: Value, lead: int = 0) -> torch.Tensor:
    """An empty stack of body output ``v`` (zero iterations), shaped as far as known."""
    dt = torch_dtype(v.dtype) if v.dtype is not None else torch.float32
    shape = v.shape
    if shape is not None and all(isinstance(d, int) for d in shape):
        return torch.zeros((lead, *shape), dtype=dt)  # type: ignore[arg-type]
    return torch.zeros((lead,), dtype=dt)


# --------------------------------------------------------------------------- If


def _if(node: Node, ctx: BuildContext) -> Kernel:
    then_p, then_pos, then_g = _compile(node, ctx, "then_branch")
    else_p, else_pos, else_g = _compile(node, ctx, "else_branch")
    n_out = len(node.outputs)
    for g, nm in ((then_g, "then_branch"), (else_g, "else_branch")):
        if len(g.outputs) != n_out:
            raise bad_model(node, f"{nm} has {len(g.outputs)} outputs, the node {n_out}")
    then_c, else_c = _const_outputs(then_g), _const_outputs(else_g)

    def kernel(cond: torch.Tensor, *rest: torch.Tensor | None) -> Any:
        args = (cond, *rest)
        if _scalar_bool(cond):
            outs = then_p([args[i] for i in then_pos])
            outs = _copy_consts(outs, then_c)
        else:
            outs = else_p([args[i] for i in else_pos])
            outs = _copy_consts(outs, else_c)
        return _pack(outs, n_out)

    return kernel


# --------------------------------------------------------------------------- Loop


def _loop(node: Node, ctx: BuildContext) -> Kernel:
    prog, pos, g = _compile(node, ctx, "body")
    n_in = _n_onnx(node)
    n_carried = n_in - 2
    if n_carried < 0:
        raise bad_model(node, "Loop needs the M and cond inputs (possibly empty)")
    if len(g.inputs) != n_carried + 2:
        raise bad_model(node, f"body has {len(g.inputs)} inputs, expected {n_carried + 2}")
    n_scan = len(g.outputs) - 1 - n_carried
    if n_scan < 0 or len(node.outputs) > n_carried + n_scan:
        raise bad_model(node, f"body has {len(g.outputs)} outputs for {n_carried} loop-carried values")
    n_out = len(node.outputs)
    consts = _const_outputs(g)
    scan_vals = g.outputs[1 + n_carried:]

    def kernel(M: torch.Tensor | None, cond: torch.Tensor | None, *rest: torch.Tensor | None) -> Any:
        args = (M, cond, *rest)
        caps = [args[i] for i in pos]
        carried: list[Any] = list(rest[:n_carried])
        trip = None if M is None else int(M.reshape(-1)[0])
        go = True if cond is None else _scalar_bool(cond)
        cond_t = torch.tensor(go)
        scans: list[list[torch.Tensor]] = [[] for _ in range(n_scan)]
        i = 0
        while go and (trip is None or i < trip):
            outs = prog([torch.tensor(i, dtype=torch.int64), cond_t, *carried, *caps])
            cond_t = outs[0]
            go = _scalar_bool(cond_t)
            carried = outs[1:1 + n_carried]
            for k in range(n_scan):
                scans[k].append(outs[1 + n_carried + k])
            i += 1
        if i > 0 and consts:
            # a body constant handed out as a final value is copied
            carried = [c.clone() if (1 + j) in consts else c for j, c in enumerate(carried)]
        stacked = [
            torch.stack(s) if s else _empty_like_value(v) for s, v in zip(scans, scan_vals)
        ]
        return _pack([*carried, *stacked][:n_out], n_out)

    return kernel


# --------------------------------------------------------------------------- Scan


def _axis(a: int, rank: int, node: Node, what: str) -> int:
    if not -rank <= a < rank:
        raise ValueError(f"{what} axis {a} out of range for rank {rank}")
    return a + rank if a < 0 else a


def _scan(node: Node, ctx: BuildContext) -> Kernel:
    prog, pos, g = _compile(node, ctx, "body")
    n_in = _n_onnx(node)
    m = attr(node, "num_scan_inputs")
    if m is None:
        raise bad_model(node, "missing attribute num_scan_inputs")
    m = int(m)
    v8 = node.opset < 9
    first = 1 if v8 else 0  # opset 8: sequence_lens comes first
    n_state = n_in - first - m
    if n_state < 0:
        raise bad_model(node, f"{n_in} inputs for {m} scan inputs")
    k_out = len(g.outputs) - n_state
    if k_out < 0 or len(g.inputs) != n_state + m:
        raise bad_model(node, "body inputs/outputs do not match the node's states and scan inputs")
    n_out = len(node.outputs)
    if v8:
        in_dirs = [int(x) for x in attr(node, "directions", [0] * m)]
        in_axes = [0] * m
        out_dirs = [0] * k_out
        out_axes = [0] * k_out
    else:
        in_dirs = [int(x) for x in attr(node, "scan_input_directions", [0] * m)]
        in_axes = [int(x) for x in attr(node, "scan_input_axes", [0] * m)]
        out_dirs = [int(x) for x in attr(node, "scan_output_directions", [0] * k_out)]
        out_axes = [int(x) for x in attr(node, "scan_output_axes", [0] * k_out)]
    if len(in_dirs) != m or len(in_axes) != m or len(out_dirs) != k_out or len(out_axes) != k_out:
        raise bad_model(node, "scan axes/directions lists do not match the scan inputs/outputs")
    consts = _const_outputs(g)
    scan_vals = g.outputs[n_state:]

    def run(states: list[torch.Tensor], xs: Sequence[torch.Tensor], caps: list[Any]) -> list[torch.Tensor]:
        axes = [_axis(a, x.dim(), node, "scan input") for a, x in zip(in_axes, xs)]
        if m == 0:
            raise ValueError("Scan needs at least one scan input")
        T = xs[0].shape[axes[0]]
        for x, a in zip(xs, axes):
            if x.shape[a] != T:
                raise ValueError(f"scan inputs have different lengths ({x.shape[a]} vs {T})")
        sl = [x.unbind(a) for x, a in zip(xs, axes)]
        sl = [s[::-1] if d else s for s, d in zip(sl, in_dirs)]
        outs_k: list[list[torch.Tensor]] = [[] for _ in range(k_out)]
        for t in range(T):
            res = prog([*states, *[s[t] for s in sl], *caps])
            states = res[:n_state]
            for k in range(k_out):
                outs_k[k].append(res[n_state + k])
        if T > 0 and consts:
            states = [s.clone() if j in consts else s for j, s in enumerate(states)]
        ys = []
        for k in range(k_out):
            if not outs_k[k]:
                ys.append(_empty_like_value(scan_vals[k]))
                continue
            seq = outs_k[k][::-1] if out_dirs[k] else outs_k[k]
            ax = _axis(out_axes[k], seq[0].dim() + 1, node, "scan output")
            ys.append(torch.stack(seq, ax))
        return [*states, *ys]

    def kernel(*args: torch.Tensor | None) -> Any:
        caps = [args[i] for i in pos]
        states = list(args[first:first + n_state])
        xs = args[first + n_state:n_in]
        if not v8:
            return _pack(run(states, xs, caps)[:n_out], n_out)  # type: ignore[arg-type]
        # opset 8: batch axis 0, time axis 1 (per batch entry: time axis 0)
        seq_lens = args[0]
        batch = xs[0].shape[0]  # type: ignore[union-attr]
        if seq_lens is not None:
            full = xs[0].shape[1]  # type: ignore[union-attr]
            if bool((seq_lens != full).any()):
                raise UnsupportedOpError(
                    f"node {node.name!r} (Scan, opset 8): sequence_lens shorter than the "
                    "scan length is not supported"
                )
        per = [
            run([s[b] for s in states], [x[b] for x in xs], caps)  # type: ignore[index]
            for b in range(batch)
        ]
        outs = [torch.stack([p[j] for p in per]) for j in range(n_state + k_out)]
        return _pack(outs[:n_out], n_out)

    return kernel


KERNELS: dict[str, Factory] = {
    "If": _if,
    "Loop": _loop,
    "Scan": _scan,
}
