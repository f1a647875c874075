"""First-divergence debugging: tap the engine at its (fused) step boundaries, find the first bad step.

The engine under test keeps its fusions. Its program runs step by step (as
``profile_program`` does); after each step, its output is compared with the reference's
tensor for the same ONNX value, then dropped — no tap is kept. The reference's intermediate
tensors come from the reference model with those names added as graph outputs, fetched in
chunks that fit a memory budget, in step order.

Which ONNX value a step's output stands for is read from the step's origin (the ONNX nodes
it covers), not trusted from the value's name alone: the value must be an *exit* of that
group of nodes — produced inside it and read outside it (or a graph output). A fused
conv+bn+relu step maps to the relu's output; a conv with a folded BatchNorm keeps the conv's
value (and name) but computes the BatchNorm's output, so it maps to the BatchNorm's output.
Steps without origin (a split after merged parallel convolutions) or with several candidate
exits are not tapped; their error is carried from their inputs.

A tap's error is its RMS error over the reference's standard deviation (offset-free, so a
uint8 tensor with a zero point and its dequantized float compare alike). A step *diverges*
when its error exceeds ``threshold`` and is more than ``jump``
times the error already present in its inputs (errors of untapped values are carried from
their inputs). For integer (quantized) tensors an int8 kernel and a float reference may round
differently by one step, so only the error beyond one unit counts towards that decision (the
full error is still what later steps inherit). The first such step is reported with the ONNX
nodes it stands for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch

from tensorkiln.backends.cpu.program import Program, Step
from tensorkiln.bench.accuracy import Reference, error_stats
from tensorkiln.engine import Engine


@dataclass
class Tap:
    step: int
    op: str
    value: str
    origin: list[str]
    stats: dict[str, float] = field(default_factory=dict)
    input_error: float = 0.0
    diverged: bool = False
    problem: str = ""

    @property
    def error(self) -> float:
        """RMS error / reference standard deviation (what later steps inherit as input error)."""
        return self.stats.get("rel_err", 0.0)

    @property
    def score(self) -> float:
        """The error judged against the threshold: beyond one unit for integer tensors."""
        return self.stats.get("rel_err_beyond_1", self.error)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "op": self.op, "value": self.value, "origin": self.origin,
                "stats": self.stats, "input_error": self.input_error, "diverged": self.diverged,
                "problem": self.problem}


@dataclass
class Divergence:
    taps: list[Tap]
    first: Tap | None  # the first step whose error jumps
    first_over: Tap | None  # the first tap over the threshold (differs from ``first`` for gradual drift)
    threshold: float
    jump: float
    untapped_steps: int
    reference_runs: int

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "jump": self.jump, "untapped_steps": self.untapped_steps,
                "reference_runs": self.reference_runs, "first_divergence": self.first.to_json() if self.first else None,
                "first_over_threshold": self.first_over.to_json() if self.first_over else None,
                "taps": [t.to_json() for t in self.taps]}


def iter_steps(program: Program, inputs: Sequence[torch.Tensor]) -> Iterator[tuple[int, Step, list[Any]]]:
    """Run ``program`` one step at a time, yielding (index, step, output tensors) after each step.

    The yielded tensors are live until the next step (later steps may write in place)."""
    env = program.template.copy()
    for s, t in zip(program.input_slots + program.capture_slots, inputs):
        env[s] = t
    for i, step in enumerate(program.steps):
        r = step.kernel(*[env[j] for j in step.ins])
        if len(step.outs) == 1:
            env[step.outs[0]] = r
        else:
            for s, t in zip(step.outs, r):
                env[s] = t
        yield i, step, [env[s] for s in step.outs]
        for f in step.frees:
            env[f] = None


def _comparable(t: torch.Tensor, node: Any, ref_dtype: np.dtype) -> np.ndarray:
    """The engine's tensor as numbers comparable with the reference's.

    tensorkiln's int8 steps hand plain uint8 codes to the next int8 step, with the scale and zero
    point in the step's attributes (``y_*``; ``x_*`` for ops that pass them through, like
    QMaxPool); where the reference holds floats, the codes are dequantized with them."""
    got = t.detach().cpu()
    if got.is_quantized:
        got = got.int_repr() if ref_dtype.kind in "iu" else got.dequantize()
    elif not got.is_floating_point() and got.dtype != torch.bool and ref_dtype.kind == "f":
        for p in ("y", "x"):
            if f"{p}_scale" in node.attrs and f"{p}_zero_point" in node.attrs:
                zp = int(node.attrs[f"{p}_zero_point"])
                got = (got.to(torch.float32) - zp) * float(node.attrs[f"{p}_scale"])
                break
    if got.dtype == torch.bfloat16 or got.dtype == torch.float16:
        got = got.float()
    return got.contiguous().numpy()


def _beyond_one_unit(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    err = np.abs(got.astype(np.int64) - ref.astype(np.int64))
    spread = float(np.std(ref.astype(np.float64))) if ref.size else 0.0
    excess = np.maximum(err - 1, 0).astype(np.float64)
    rms_ex = float(np.sqrt(np.mean(np.square(excess)))) if excess.size else 0.0
    return {"rel_err_beyond_1": rms_ex / spread if spread > 0 else (0.0 if rms_ex == 0 else float("inf")),
            "share_off_by_more_than_1": float(np.mean(err > 1)) if err.size else 0.0,
            "share_off_by_1": float(np.mean(err == 1)) if err.size else 0.0}


def tap_plan(program: Program, model: onnx.ModelProto) -> list[tuple[int, int, str]]:
    """(step index, output index, ONNX value name) for every step output that can be tapped."""
    node_outs: dict[str, list[str]] = {}
    readers: dict[str, set[str]] = {}
    for i, n in enumerate(model.graph.node):
        name = n.name or f"{n.op_type}_{i}"  # as the ONNX importer names unnamed nodes
        node_outs[name] = [o for o in n.output if o]
        for x in n.input:
            if x:
                readers.setdefault(x, set()).add(name)
    graph_outs = {o.name for o in model.graph.output}
    plan: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for i, st in enumerate(program.steps):
        group = set(st.node.origin)
        if not group or not group <= set(node_outs):
            continue
        exits = [o for n in st.node.origin for o in node_outs[n]
                 if o in graph_outs or readers.get(o, set()) - group]
        exits = list(dict.fromkeys(exits))
        for k, v in enumerate(st.node.outputs):
            if v.name in exits:
                target = v.name
            elif len(st.node.outputs) == 1 and len(exits) == 1:
                target = exits[0]  # e.g. conv with a folded BatchNorm: the conv's value is the BN's output
            else:
                continue
            if target not in seen:
                seen.add(target)
                plan.append((i, k, target))
    return plan


def _tensor_bytes(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Estimated size of each value at these input shapes (shape inference with concrete inputs)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        if inp.name in feeds and inp.type.HasField("tensor_type"):
            shp = inp.type.tensor_type.shape
            dims = np.shape(feeds[inp.name])
            if len(shp.dim) == len(dims):
                for d, n in zip(shp.dim, dims):
                    d.ClearField("dim_param")
                    d.dim_value = int(n)
    out: dict[str, int] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(m)
    except Exception:
        return out
    for v in inferred.graph.value_info:
        t = v.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            out[v.name] = int(np.prod([d.dim_value for d in t.shape.dim], dtype=np.int64)) * 8
    return out


class _ChunkedReference:
    """Reference tensors fetched in order, a chunk at a time (at most ``budget`` bytes held)."""

    def __init__(self, ref: Reference, feeds: Mapping[str, np.ndarray], order: list[str], budget: int) -> None:
        self.ref, self.feeds, self.order, self.budget = ref, feeds, order, budget
        self.pos = {n: i for i, n in enumerate(order)}
        self.sizes = _tensor_bytes(ref.model, feeds)
        self.default = max((int(np.asarray(a).nbytes) * 2 for a in feeds.values()), default=1 << 20)
        self.held: dict[str, np.ndarray] = {}
        self.runs = 0

    def take(self, name: str) -> np.ndarray:
        if name not in self.held:
            self.held.clear()  # whatever was fetched before and not taken is dropped
            names: list[str] = []
            total = 0
            for n in self.order[self.pos[name]:]:
                sz = self.sizes.get(n, self.default)
                if names and total + sz > self.budget:
                    break
                names.append(n)
                total += sz
            res = self.ref.run(self.feeds, names)
            self.runs += 1
            self.held = {n: res[n] for n in names if n in res}
        return self.held.pop(name)


def find_divergence(engine: Engine, reference: Reference, feeds: Mapping[str, np.ndarray], *,
                    threshold: float = 1e-3, jump: float = 5.0, chunk_bytes: int = 256 << 20,
                    on_tap: Callable[[Tap], None] | None = None, stop_at_first: bool = False) -> Divergence:
    program: Program = engine._program
    plan = tap_plan(program, reference.model)
    by_step: dict[int, dict[int, str]] = {}
    for i, k, name in plan:
        by_step.setdefault(i, {})[k] = name
    untapped = len(program.steps) - len(by_step)
    chunks = _ChunkedReference(reference, feeds, [n for _, _, n in plan], chunk_bytes)
    err_of: dict[int, float] = {}  # id(Value) → error carried by that value
    taps: list[Tap] = []
    first: Tap | None = None
    first_over: Tap | None = None
    for i, step, outs in iter_steps(program, engine._prepare(feeds)):
        node = step.node
        in_err = max((err_of.get(id(v), 0.0) for v in node.inputs if v is not None), default=0.0)
        targets = by_step.get(i, {})
        for k, (v, t) in enumerate(zip(node.outputs, outs)):
            target = targets.get(k)
            if target is None or not isinstance(t, torch.Tensor):
                err_of[id(v)] = in_err
                continue
            tap = Tap(i, node.qualified_op, target, list(node.origin), input_error=in_err)
            ref = np.asarray(chunks.take(target))
            got_np = _comparable(t, node, ref.dtype)
            if got_np.shape != ref.shape:
                tap.problem = f"shape {list(got_np.shape)} vs reference {list(ref.shape)}"
                err_of[id(v)] = in_err
            elif got_np.dtype.kind not in "fciub" or ref.dtype.kind not in "fciub":
                err_of[id(v)] = in_err
                tap.problem = "non-numeric"
            else:
                tap.stats = error_stats(got_np, ref)
                if got_np.dtype.kind in "iu" and ref.dtype.kind in "iu":
                    tap.stats.update(_beyond_one_unit(got_np, ref))
                err_of[id(v)] = tap.error
                tap.diverged = tap.score > threshold and tap.score > jump * in_err
            del ref, got_np  # compare, then drop
            if tap.score > threshold and first_over is None:
                first_over = tap
            if tap.diverged and first is None:
                first = tap
            taps.append(tap)
            if on_tap:
                on_tap(tap)
        if stop_at_first and first is not None:
            break
    return Divergence(taps, first, first_over, threshold, jump, untapped, chunks.runs)
