"""First-divergence debugging: tap the engine at its (fused) step boundaries, find the first bad step.

The engine under test keeps its fusions. Its program runs step by step (as
``profile_program`` does); after each step, every output value whose name is a tensor of the
reference model (a fused step keeps the last absorbed node's output value, so its name is an
ONNX name) is compared with the reference's tensor of that name, then dropped — no tap is
kept. The reference's intermediate tensors come from the reference model with those names
added as graph outputs, fetched in chunks that fit a memory budget, in step order.

A step *diverges* when its relative RMS error exceeds ``threshold`` and is more than ``jump``
times the error already present in its inputs (errors of untapped values are carried from
their inputs). The first such step is reported with the ONNX nodes it stands for.
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
        return self.stats.get("rel_rms", 0.0)

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


def _value_names(model: onnx.ModelProto) -> set[str]:
    return {o for n in model.graph.node for o in n.output if o}


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
                    threshold: float = 1e-3, jump: float = 10.0, chunk_bytes: int = 256 << 20,
                    on_tap: Callable[[Tap], None] | None = None, stop_at_first: bool = False) -> Divergence:
    program: Program = engine._program
    ref_names = _value_names(reference.model)
    plan = [(i, v.name) for i, st in enumerate(program.steps) for v in st.node.outputs if v.name in ref_names]
    untapped = sum(1 for st in program.steps if not any(v.name in ref_names for v in st.node.outputs))
    chunks = _ChunkedReference(reference, feeds, list(dict.fromkeys(n for _, n in plan)), chunk_bytes)
    err_of: dict[int, float] = {}  # id(Value) → error carried by that value
    taps: list[Tap] = []
    first: Tap | None = None
    first_over: Tap | None = None
    for i, step, outs in iter_steps(program, engine._prepare(feeds)):
        node = step.node
        in_err = max((err_of.get(id(v), 0.0) for v in node.inputs if v is not None), default=0.0)
        for v, t in zip(node.outputs, outs):
            if v.name not in ref_names or not isinstance(t, torch.Tensor):
                err_of[id(v)] = in_err
                continue
            tap = Tap(i, node.qualified_op, v.name, list(node.origin) or [node.name], input_error=in_err)
            ref = chunks.take(v.name)
            got = t.detach().cpu()
            if got.dtype == torch.bfloat16:
                got = got.float()
            got_np = got.contiguous().numpy()
            if got_np.shape != np.shape(ref):
                tap.problem = f"shape {list(got_np.shape)} vs reference {list(np.shape(ref))}"
                err_of[id(v)] = in_err
            elif got_np.dtype.kind not in "fciub":
                err_of[id(v)] = in_err
                tap.problem = "non-numeric"
            else:
                tap.stats = error_stats(got_np, np.asarray(ref))
                err_of[id(v)] = tap.error
                tap.diverged = tap.error > threshold and tap.error > jump * in_err
            del ref, got, got_np  # compare, then drop
            if tap.error > threshold and first_over is None:
                first_over = tap
            if tap.diverged and first is None:
                first = tap
            taps.append(tap)
            if on_tap:
                on_tap(tap)
        if stop_at_first and first is not None:
            break
    return Divergence(taps, first, first_over, threshold, jump, untapped, chunks.runs)
