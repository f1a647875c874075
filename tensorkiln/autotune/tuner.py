"""The autotuner: for every step with several tactics, time each on the step's real inputs.

Procedure: lower the graph with the heuristic tactics, run it once on inputs of the tuning
shapes, and keep the inputs of each tunable step. For each such step, build every valid
tactic's kernel and time it (warm-up, then repeats; the median), unless the timing cache
already knows it. The input is passed as the previous step produced it, so a tactic that
must reorder its input pays for that reorder. The heuristic incumbent is replaced only when
another tactic is faster by more than the measured noise (and at least ``MIN_GAIN``).
Choices are stored in ``node.attrs["tactic"]`` and travel with the engine file.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tensorkiln.autotune.cache import TimingCache
from tensorkiln.backends.cpu.base import BuildContext
from tensorkiln.backends.cpu.ops_fused import default_conv_tactic, tactics_for
from tensorkiln.backends.cpu.program import Program
from tensorkiln.ir import Node

MIN_GAIN = 0.03  # a challenger must be at least 3 % faster than the incumbent


@dataclass
class TuneRecord:
    step: int
    node: str
    op: str
    origin: list[str]
    signature: str
    incumbent: str
    chosen: str
    times_ms: dict[str, float] = field(default_factory=dict)
    cached: bool = False
    pinned: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "node": self.node, "op": self.op, "origin": self.origin,
                "incumbent": self.incumbent, "chosen": self.chosen, "times_ms": self.times_ms,
                "from_cache": self.cached, "pinned": self.pinned, "signature": self.signature}


def _sig_tensor(t: Any) -> Any:
    if not isinstance(t, torch.Tensor):
        return None
    layout = "nhwc" if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous() else "std"
    return [list(t.shape), str(t.dtype).replace("torch.", ""), layout]


def signature(node: Node, args: Sequence[Any]) -> str:
    attrs = {k: v for k, v in node.attrs.items() if k not in ("tactic", "layout") and not isinstance(v, np.ndarray)}
    w = node.inputs[1] if len(node.inputs) > 1 else None
    wshape = list(w.const.shape) if w is not None and w.const is not None else None
    return json.dumps({"op": node.qualified_op, "attrs": attrs, "w": wshape, "timing": TIMING_METHOD,
                       "in": [_sig_tensor(a) for a in args]}, sort_keys=True, default=str)


def _default_tactic(node: Node) -> str:
    return default_conv_tactic(node) if node.op_type == "FusedConv" else "aten-linear"


TIMING_METHOD = "cold-weights-side-by-side-2"  # part of every cache key: entries timed another way are not reused


def _llc_bytes() -> int:
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
        return int(text[:-1]) * 1024 if text.endswith("K") else int(text)
    except (OSError, ValueError):
        return 32 << 20


class CacheFlusher:
    """Timing a layer in a loop keeps its weights in cache; inside a network they are not (a
    ResNet-50 reads 100 MB of weights per inference). Before each timed call, read a buffer
    twice the last-level cache, then re-read the layer's inputs (just written by the previous
    layer in a real run). Measured: warm-loop timing made Winograd look 1.9x faster on a
    ResNet-50 stage-2 layer where, with cold weights, it is 1.09x — and the tuned engine no
    faster end to end."""

    def __init__(self) -> None:
        self.buf: torch.Tensor | None = None  # made on first use: a warm-cache build times nothing

    def __call__(self, args: Sequence[Any]) -> None:
        if self.buf is None:
            self.buf = torch.ones(min(2 * _llc_bytes(), 256 << 20) // 4)
        self.buf.sum()
        for a in args:
            if isinstance(a, torch.Tensor) and a.numel() and a.dtype.is_floating_point:
                a.sum()


def _time_side_by_side(kernels: dict[str, Callable[..., Any]], args: Sequence[Any], repeats: int,
                       flush: Callable[[Sequence[Any]], None] | None = None) -> dict[str, tuple[float, float]]:
    """Median and IQR (ms) of every kernel, timed in interleaved rounds (the order rotating each
    round) so that all of them see the same machine: on a shared host the speed drifts by tens
    of percent over seconds, more than most differences between tactics."""
    names = list(kernels)
    for name in names:
        for _ in range(2):
            kernels[name](*args)
    ts: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            if flush is not None:
                flush(args)
            t0 = time.perf_counter()
            kernels[name](*args)
            ts[name].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for name, v in ts.items():
        q1, q3 = np.percentile(v, [25, 75])
        out[name] = (float(np.median(v)), float(q3 - q1))
    return out


def tune_graph(program: Program, inputs: Sequence[torch.Tensor], registry: dict[tuple[str, str], Any],
               cache: TimingCache, level: int, budget_s: float, pinned: dict[str, str] | None = None,
               progress: Callable[[int, int, str], None] | None = None) -> list[TuneRecord]:
    """Choose a tactic for every tunable step; returns one record per tunable step."""
    pinned = pinned or {}
    repeats = {1: 3, 2: 5, 3: 7, 4: 11, 5: 21}.get(level, 5)
    env = program.template.copy()
    for s, t in zip(program.input_slots + program.capture_slots, inputs):
        env[s] = t
    tunable = [i for i, st in enumerate(program.steps) if len(tactics_for(st.node)) > 1]
    flusher = CacheFlusher()
    records: list[TuneRecord] = []
    t_start = time.perf_counter()
    done = 0
    for i, step in enumerate(program.steps):
        args = [env[k] for k in step.ins]
        if i in tunable:
            # in-place kernels write into their residual input: time them on a copy
            targs = [a.clone() if k == 3 and isinstance(a, torch.Tensor) else a for k, a in enumerate(args)] \
                if step.node.attrs.get("residual_inplace") else args
            records.append(_tune_step(i, step.node, targs, registry, cache, repeats, pinned, flusher,
                                      over_budget=time.perf_counter() - t_start > budget_s))
            done += 1
            if progress is not None:
                progress(done, len(tunable), step.node.name)
        r = step.kernel(*args)
        if len(step.outs) == 1:
            env[step.outs[0]] = r
        else:
            for s, t in zip(step.outs, r):
                env[s] = t
        for f in step.frees:
            env[f] = None
    return records


def _tune_step(i: int, node: Node, args: list[Any], registry: dict[tuple[str, str], Any], cache: TimingCache,
               repeats: int, pinned: dict[str, str], flusher: CacheFlusher, over_budget: bool) -> TuneRecord:
    tactics = tactics_for(node)
    incumbent = _default_tactic(node)
    sig = signature(node, args)
    rec = TuneRecord(i, node.name, node.qualified_op, list(node.origin), sig, incumbent, incumbent)
    if node.name in pinned:
        rec.chosen, rec.pinned = pinned[node.name], True
        node.attrs["tactic"] = rec.chosen
        return rec
    spreads: dict[str, float] = {}
    keys = {tac: f"{sig}|{tac}@{ver}" for tac, ver in tactics.items()}
    missing = [tac for tac, key in keys.items() if cache.get(key) is None]
    all_cached = not missing
    if missing:
        # time every candidate again, side by side: timings taken minutes (or builds) apart on a
        # shared machine are not comparable, so a new tactic never races a cached number
        todo = [tac for tac in keys if not over_budget or tac == incumbent]  # out of time: heuristic
        kernels: dict[str, Callable[..., Any]] = {}
        for tac in todo:
            trial = copy.copy(node)
            trial.attrs = {**node.attrs, "tactic": tac}
            try:
                kernel = registry[(node.domain, node.op_type)](trial, BuildContext(compile_subgraph=_no_sub))
                if node.attrs.get("layout") == "nhwc":
                    kernel = _with_reorder(kernel)
                kernel(*args)  # a tactic that cannot run this layer is not a candidate
            except Exception:
                continue
            kernels[tac] = kernel
        for tac, (ms, spread) in _time_side_by_side(kernels, args, repeats, flusher).items():
            cache.put(keys[tac], ms)
            cache.put(keys[tac] + "#iqr", spread)  # decisions depend only on cached numbers: replayable
    for tac, key in keys.items():
        ms = cache.entries.get(key)  # counted as a hit or miss above
        if ms is None or (missing and over_budget and tac != incumbent):
            continue
        spreads[tac] = cache.entries.get(key + "#iqr", 0.0)
        rec.times_ms[tac] = round(ms, 4)
    rec.cached = all_cached
    if rec.times_ms:
        best = min(rec.times_ms, key=lambda t: rec.times_ms[t])
        inc_ms = rec.times_ms.get(incumbent)
        noise = max(spreads.get(best, 0.0), spreads.get(incumbent, 0.0))
        if inc_ms is None or (inc_ms - rec.times_ms[best] > max(noise, MIN_GAIN * inc_ms)):
            rec.chosen = best
    node.attrs["tactic"] = rec.chosen
    return rec


def _with_reorder(kernel: Callable[..., Any]) -> Callable[..., Any]:
    """In the channels-last region the consumers want NHWC: a tactic that returns NCHW is
    charged for the reorder its output will need (measured: the ResNet-50 stem is 0.7 ms
    faster through ATen NCHW, and its max pool then pays 0.8 ms to convert)."""
    cl = torch.channels_last

    def timed(*args: Any) -> Any:
        y = kernel(*args)
        if isinstance(y, torch.Tensor) and y.dim() == 4:
            y = y.contiguous(memory_format=cl)
        return y

    return timed


def _no_sub(g: object) -> object:
    raise RuntimeError("tunable steps have no subgraphs")
