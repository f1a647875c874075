"""Per-tensor statistics collected in one pass over the calibration data.

For every observed tensor: its min and max, and a histogram of ``|x|`` with ``NUM_BINS`` bins
over ``[0, top)``, where ``top`` is the smallest power of two strictly above the largest
``|x|`` seen so far. When a larger value arrives, ``top`` doubles (as often as needed) and
neighbouring bins are merged pairwise. Because bin edges are ``k * top / NUM_BINS`` with
``top`` a power of two, ``x * NUM_BINS / top`` is computed exactly in floating point and
merging two bins gives exactly the bin the coarser histogram would have counted the value
in: the final histogram depends only on the multiset of observed values, not on their
order or on how they were split into batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

NUM_BINS = 2048


def _top_for(amax: float) -> float:
    """The smallest power of two strictly greater than ``amax`` (> 0)."""
    _m, e = math.frexp(amax)  # amax = m * 2**e with 0.5 <= m < 1  →  2**(e-1) <= amax < 2**e
    return math.ldexp(1.0, e)


@dataclass
class TensorStats:
    """min / max / |x| histogram of one tensor over everything observed."""

    min: float = math.inf
    max: float = -math.inf
    top: float = 0.0  # histogram range [0, top); 0 until a non-zero value is seen
    hist: np.ndarray = field(default_factory=lambda: np.zeros(NUM_BINS, np.int64))
    count: int = 0  # finite values observed
    nonfinite: int = 0  # NaN / inf values seen (left out of every statistic)

    @property
    def amax(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.count else 0.0

    @property
    def bin_width(self) -> float:
        return self.top / NUM_BINS

    def update(self, t: torch.Tensor) -> None:
        if not t.is_floating_point() or t.numel() == 0:
            return
        a = t.detach()
        if a.dtype != torch.float32:
            a = a.float()
        a = a.reshape(-1)
        mn, mx = (float(v) for v in torch.aminmax(a))
        if not (math.isfinite(mn) and math.isfinite(mx)):
            finite = torch.isfinite(a)
            self.nonfinite += int((~finite).sum())
            a = a[finite]
            if a.numel() == 0:
                return
            mn, mx = (float(v) for v in torch.aminmax(a))
        self.min = min(self.min, mn)
        self.max = max(self.max, mx)
        self.count += int(a.numel())
        amax = max(-mn, mx)
        if amax <= 0.0:
            self.hist[0] += a.numel()
            return
        top = _top_for(amax)
        if top > self.top:
            self._grow(top)
        h = torch.histc(a.abs(), bins=NUM_BINS, min=0.0, max=self.top)
        self.hist += h.to(torch.int64).numpy()

    def _grow(self, top: float) -> None:
        if self.top == 0.0:
            self.top = top
            return
        factor = round(top / self.top)
        merged = self.hist.reshape(-1, factor).sum(axis=1)
        self.hist = np.zeros(NUM_BINS, np.int64)
        self.hist[: merged.size] = merged
        self.top = top

    def merge(self, other: TensorStats) -> None:
        """Fold another observer's statistics into this one (same result as one observer)."""
        if other.count == 0:
            self.nonfinite += other.nonfinite
            return
        top = max(self.top, other.top)
        if top > self.top:
            self._grow(top)
        h = other.hist
        if other.top and other.top < top:
            factor = round(top / other.top)
            h = np.zeros(NUM_BINS, np.int64)
            m = other.hist.reshape(-1, factor).sum(axis=1)
            h[: m.size] = m
        self.hist = self.hist + h
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.count += other.count
        self.nonfinite += other.nonfinite


class Observer:
    """Collects :class:`TensorStats` for a set of named tensors."""

    def __init__(self, names: list[str]) -> None:
        self.stats: dict[str, TensorStats] = {n: TensorStats() for n in names}

    def __call__(self, name: str, t: torch.Tensor) -> None:
        s = self.stats.get(name)
        if s is not None:
            s.update(t)
