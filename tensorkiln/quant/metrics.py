"""Accuracy metrics comparing an engine's outputs with the fp32 engine's (1.0 = identical).

* ``top1``: the fraction of rows whose arg-max over the last axis agrees (a classifier's
  logits ``[N, C]``, or per-position scores ``[N, T, C]``);
* ``cosine``: the smallest cosine similarity over samples and outputs;
* ``auto``: ``top1`` when every output is ``[N, C]`` class scores (rank 2, C ≥ 2), else
  ``cosine`` (sequence scores ``[N, T, C]`` too: per-position agreement flips on positions
  nobody reads, such as CTC blanks);
* a callable ``metric(reference_outputs, outputs) -> float`` over lists of dicts
  (output name → numpy array), one per held-out batch.

``distance`` (normalized mean squared error) ranks layers by sensitivity and methods by
error: it is continuous where agreement counts are not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

Outputs = list[list[torch.Tensor]]  # per batch, per output


def auto_metric(output_shapes: Sequence[Sequence[Any] | None]) -> str:
    ok = all(s is not None and len(s) == 2 and isinstance(s[-1], int) and s[-1] >= 2 for s in output_shapes)
    return "top1" if ok and output_shapes else "cosine"


def top1(ref: Outputs, got: Outputs) -> float:
    agree = total = 0
    for rb, gb in zip(ref, got):
        for r, g in zip(rb, gb):
            a = r.argmax(dim=-1) == g.argmax(dim=-1)
            agree += int(a.sum())
            total += a.numel()
    return agree / total if total else 1.0


def cosine(ref: Outputs, got: Outputs) -> float:
    worst = 1.0
    for rb, gb in zip(ref, got):
        for r, g in zip(rb, gb):
            r2 = r.reshape(r.shape[0], -1).double() if r.dim() else r.reshape(1, 1).double()
            g2 = g.reshape(g.shape[0], -1).double() if g.dim() else g.reshape(1, 1).double()
            c = torch.nn.functional.cosine_similarity(r2, g2, dim=1, eps=1e-30)
            worst = min(worst, float(c.min()))
    return worst


def distance(ref: Outputs, got: Outputs) -> float:
    """Mean over outputs of mean((got - ref)²) / mean(ref²)."""
    num: list[float] = []
    den: list[float] = []
    for rb, gb in zip(ref, got):
        for i, (r, g) in enumerate(zip(rb, gb)):
            if len(num) <= i:
                num.append(0.0)
                den.append(0.0)
            num[i] += float(((g.double() - r.double()) ** 2).sum())
            den[i] += float((r.double() ** 2).sum())
    return float(np.mean([n / d if d > 0 else n for n, d in zip(num, den)])) if num else 0.0


def make_metric(metric: str | Callable[..., float], output_names: Sequence[str],
                output_shapes: Sequence[Sequence[Any] | None]) -> tuple[str, Callable[[Outputs, Outputs], float]]:
    if callable(metric):
        user = metric

        def wrapped(ref: Outputs, got: Outputs) -> float:
            r = [dict(zip(output_names, [t.numpy() for t in b])) for b in ref]
            g = [dict(zip(output_names, [t.numpy() for t in b])) for b in got]
            return float(user(r, g))

        return getattr(metric, "__name__", "custom"), wrapped
    name = auto_metric(output_shapes) if metric == "auto" else metric
    table = {"top1": top1, "cosine": cosine}
    if name not in table:
        from tensorkiln.errors import OptionError

        raise OptionError(f"unknown accuracy metric {metric!r}; use 'auto', 'top1', 'cosine' or a callable")
    return name, table[name]
