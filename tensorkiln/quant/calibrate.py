"""Calibration: one pass over the user's data collects per-tensor statistics, then each
tensor's range is chosen (``minmax``, ``entropy``, ``percentile-99.9|99.99|99.999``,
``mse``, or ``auto``).

``auto`` (the default) evaluates, per tensor, every distinct candidate range on the
held-out samples: only that tensor fake-quantized, the network's outputs compared with
fp32 (normalized squared error), and keeps the method with the smallest error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tensorkiln.errors import OptionError
from tensorkiln.quant.data import Rebatcher, batches_of
from tensorkiln.quant.methods import METHODS, compute_range
from tensorkiln.quant.metrics import Outputs, distance
from tensorkiln.quant.observer import Observer, TensorStats
from tensorkiln.quant.qparams import QParams
from tensorkiln.quant.runner import GraphRunner
from tensorkiln.quant.simulate import fake_quant

CALIBRATORS = ("auto", *METHODS, "percentile", "dynamic")


@dataclass
class TensorRange:
    lo: float
    hi: float
    method: str


@dataclass
class Calibration:
    ranges: dict[str, TensorRange] = field(default_factory=dict)
    stats: dict[str, TensorStats] = field(default_factory=dict)
    held_out: list[dict[str, np.ndarray]] = field(default_factory=list)  # batches
    n_samples: int = 0
    n_held_out: int = 0

    def range_map(self) -> dict[str, tuple[float, float]]:
        return {k: (r.lo, r.hi) for k, r in self.ranges.items()}


def check_calibrator(name: str) -> str:
    if name == "percentile":
        return "percentile-99.99"
    if name not in CALIBRATORS:
        raise OptionError(f"unknown calibrator {name!r}; choose one of {list(CALIBRATORS)}")
    return name


@contextmanager
def progress_bar(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not (enabled and console.is_terminal)) as p:
        yield p


def _feeds(runner: GraphRunner, batch: Mapping[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(batch[n])) for n in runner.input_names]


def collect(runner: GraphRunner, data: Iterable[Mapping[str, Any]], names: Sequence[str], chunk: int = 8,
            max_held_out: int = 64, progress: bool = True) -> Calibration:
    """One pass over ``data``: statistics of ``names`` on the non-held-out samples."""
    obs = Observer(list(names))
    rb = Rebatcher(runner.input_names, chunk=chunk, max_held_out=max_held_out)
    total = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
    with progress_bar(progress) as bar:
        task = bar.add_task("calibrating", total=total)
        with torch.inference_mode():
            for batch in rb.chunks(_count(data, lambda: bar.advance(task))):
                runner(_feeds(runner, batch), tap=obs)
    cal = Calibration(stats=obs.stats, n_samples=rb.n_samples, n_held_out=len(rb.held_out))
    if rb.n_stats == 0:
        raise OptionError("calibration_data yielded no samples")
    cal.held_out = batches_of(rb.held_out, chunk)
    return cal


def _count(data: Iterable[Any], tick: Callable[[], None]) -> Iterable[Any]:
    for x in data:
        yield x
        tick()


def reference_outputs(runner: GraphRunner, batches: list[dict[str, np.ndarray]]) -> Outputs:
    with torch.inference_mode():
        return [[t.clone() for t in runner(_feeds(runner, b))] for b in batches]


def _same_grid(a: QParams, b: QParams) -> bool:
    """Grids within 1 % of each other quantize alike: not worth a separate evaluation."""
    return abs(a.scale - b.scale) <= 0.01 * max(a.scale, b.scale) and abs(a.zero_point - b.zero_point) <= 2


def choose_ranges(cal: Calibration, method: str, runner: GraphRunner | None = None,
                  eval_batches: list[dict[str, np.ndarray]] | None = None, ref: Outputs | None = None,
                  progress: bool = True, evaluate: set[str] | None = None,
                  fallback: str = "entropy") -> dict[str, TensorRange]:
    """Ranges per tensor. With ``auto``, tensors in ``evaluate`` (default: all) are chosen by
    evaluation; the others (not quantized by any candidate plan) get ``fallback``."""
    method = check_calibrator(method)
    out: dict[str, TensorRange] = {}
    if method != "auto":
        for name, st in cal.stats.items():
            lo, hi = compute_range(method, st) if st.count else (0.0, 0.0)
            out[name] = TensorRange(lo, hi, method)
        return out
    assert runner is not None and eval_batches is not None and ref is not None
    todo: list[tuple[str, list[tuple[str, tuple[float, float]]]]] = []
    for name, st in cal.stats.items():
        if evaluate is not None and name not in evaluate:
            lo, hi = compute_range(fallback, st) if st.count else (0.0, 0.0)
            out[name] = TensorRange(lo, hi, fallback)
            continue
        cands: list[tuple[str, tuple[float, float]]] = []
        for m in METHODS:
            r = compute_range(m, st) if st.count else (0.0, 0.0)
            qp = QParams.from_range(*r)
            if all(not _same_grid(QParams.from_range(*c), qp) for _, c in cands):
                cands.append((m, r))
        if len(cands) == 1:
            out[name] = TensorRange(*cands[0][1], cands[0][0])
        else:
            todo.append((name, cands))
    with progress_bar(progress) as bar, torch.inference_mode():
        task = bar.add_task("choosing ranges", total=sum(len(c) for _, c in todo))
        for name, cands in todo:
            best: tuple[float, str, tuple[float, float]] | None = None
            for m, r in cands:
                hook = {name: fake_quant(QParams.from_range(*r))}
                got = [runner(_feeds(runner, b), value_hooks=hook) for b in eval_batches]
                err = distance(ref, got)
                if best is None or err < best[0] - 1e-12:
                    best = (err, m, r)
                bar.advance(task)
            assert best is not None
            out[name] = TensorRange(best[2][0], best[2][1], best[1])
    return out
