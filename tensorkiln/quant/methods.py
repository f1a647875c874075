"""Range-selection methods: from a tensor's statistics to the range ``[lo, hi]`` it is quantized to.

Every histogram method picks a threshold ``T`` on ``|x|``; the quantized range is then
``[max(min, -T), min(max, T)]`` widened to contain 0 (activations are asymmetric uint8).

* ``minmax``: ``[min, max]``.
* ``entropy``: TensorRT's KL-divergence calibration. For every candidate threshold bin
  ``i`` in ``128 .. NUM_BINS``: the reference distribution P is the first ``i`` bins with
  all outliers added to the last one; Q quantizes those ``i`` bins to 128 levels and
  expands each level evenly over its non-zero bins; the threshold with the smallest
  KL(P‖Q) wins (the last one on ties). As in NVIDIA's pytorch-quantization, bin 0 is set
  to bin 1's count first, so the spike of exact zeros after a ReLU does not dominate.
  Computed for all candidates at once with prefix sums (exactly the per-candidate loop).
* ``percentile-P``: the ``P``-th percentile of ``|x|`` (upper edge of the bin where the
  cumulative count reaches ``P`` %), for P = 99.9, 99.99, 99.999.
* ``mse``: the threshold minimizing the expected squared error of uniform 8-bit
  quantization of the histogram (clipping error plus ``step² / 12`` rounding error).
"""

from __future__ import annotations

import math

import numpy as np

from tensorkiln.quant.observer import NUM_BINS, TensorStats

PERCENTILES = (99.9, 99.99, 99.999)
METHODS = ("minmax", "entropy", *(f"percentile-{p:g}" for p in PERCENTILES), "mse")
LEVELS = 128  # TensorRT's entropy: reference quantized to 128 levels
START_BIN = 128


def _clip_range(stats: TensorStats, t: float) -> tuple[float, float]:
    lo, hi = max(stats.min, -t), min(stats.max, t)
    return min(lo, 0.0), max(hi, 0.0)


def minmax(stats: TensorStats) -> tuple[float, float]:
    return min(stats.min, 0.0), max(stats.max, 0.0)


def entropy_threshold(hist: np.ndarray, levels: int = LEVELS, start: int = START_BIN) -> int:
    """The KL-optimal threshold as a bin count ``i`` (threshold = ``i * bin_width``)."""
    h = hist.astype(np.float64).copy()
    n = h.size
    if n > 1:
        h[0] = h[1]
    total = h.sum()
    if total <= 0:
        return n
    start = min(start, n)
    cands = np.arange(start, n + 1)  # candidate i: keep bins [0, i)
    csum = np.concatenate([[0.0], np.cumsum(h)])
    nz = np.concatenate([[0], np.cumsum(h > 0)])
    hlogh = np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0)
    chlogh = np.concatenate([[0.0], np.cumsum(hlogh)])
    outl = total - csum[cands]  # mass beyond the threshold
    last = h[cands - 1]  # the last kept bin, before the outliers are added
    # chunk j of candidate i covers bins [ceil(j*i/L), ceil((j+1)*i/L))
    j = np.arange(levels + 1)
    edges = (j[None, :] * cands[:, None] + levels - 1) // levels  # [C, L+1]
    csums = csum[edges[:, 1:]] - csum[edges[:, :-1]]  # chunk mass
    cnz = nz[edges[:, 1:]] - nz[edges[:, :-1]]  # non-zero bins per chunk
    with np.errstate(divide="ignore", invalid="ignore"):
        qlev = np.where(cnz > 0, csums / np.maximum(cnz, 1), 0.0)  # expanded value per non-zero bin
        logq = np.where(qlev > 0, np.log(np.where(qlev > 0, qlev, 1.0)), 0.0)
        sum_p_logq = (csums * logq).sum(axis=1)
        # the last bin's q (its chunk's level) also weighs the outliers added to P's last bin
        last_chunk = np.minimum((cands - 1) * levels // cands, levels - 1)
        q_last = qlev[np.arange(cands.size), last_chunk]
        p_last = last + outl
        sum_p_logq = sum_p_logq + np.where(outl > 0, outl * np.log(np.where(q_last > 0, q_last, 1.0)), 0.0)
        sum_p_logp = chlogh[cands - 1] + np.where(p_last > 0, p_last * np.log(np.where(p_last > 0, p_last, 1.0)), 0.0)
        kl = (sum_p_logp - sum_p_logq) / total - math.log(total) + np.log(total - outl)
        kl = np.where((outl > 0) & ((last == 0) | (q_last == 0)), np.inf, kl)  # P > 0 where Q = 0
    kl = np.where(np.isfinite(kl), kl, np.inf)
    best = np.flatnonzero(kl == kl.min())[-1]
    return int(cands[best])


def entropy(stats: TensorStats) -> tuple[float, float]:
    if stats.top == 0.0:
        return minmax(stats)
    i = entropy_threshold(stats.hist)
    return _clip_range(stats, i * stats.bin_width)


def percentile(stats: TensorStats, p: float) -> tuple[float, float]:
    if stats.top == 0.0:
        return minmax(stats)
    c = np.cumsum(stats.hist)
    k = int(np.searchsorted(c, c[-1] * p / 100.0, side="left"))
    return _clip_range(stats, min((k + 1) * stats.bin_width, stats.amax))


def mse(stats: TensorStats, qlevels: int = 255) -> tuple[float, float]:
    if stats.top == 0.0:
        return minmax(stats)
    h = stats.hist.astype(np.float64)
    w = stats.bin_width
    centers = (np.arange(NUM_BINS) + 0.5) * w
    nonneg = stats.min >= 0.0
    cands = np.arange(START_BIN, NUM_BINS + 1, 4) * w
    cands = np.unique(np.minimum(cands, stats.amax))
    span = cands if nonneg else 2.0 * cands  # width of the quantized range
    step = span / qlevels
    clip = np.maximum(centers[None, :] - cands[:, None], 0.0)
    err = (h[None, :] * np.where(clip > 0, clip**2, (step**2 / 12.0)[:, None])).sum(axis=1)
    return _clip_range(stats, float(cands[int(np.argmin(err))]))


def compute_range(method: str, stats: TensorStats) -> tuple[float, float]:
    """``[lo, hi]`` for ``method`` (one of :data:`METHODS`)."""
    if method == "minmax":
        return minmax(stats)
    if method == "entropy":
        return entropy(stats)
    if method == "mse":
        return mse(stats)
    if method.startswith("percentile"):
        p = float(method.split("-", 1)[1]) if "-" in method else 99.99
        return percentile(stats, p)
    raise ValueError(f"unknown calibration method {method!r}; methods are {list(METHODS)}")


def entropy_threshold_loop(hist: np.ndarray, levels: int = LEVELS, start: int = START_BIN) -> int:
    """The same as :func:`entropy_threshold`, written as the plain per-candidate loop (for tests)."""
    bins = hist.astype(np.float64).copy()
    if bins.size > 1:
        bins[0] = bins[1]
    total = bins.sum()
    best_i, best_kl = bins.size, math.inf
    for i in range(min(start, bins.size), bins.size + 1):
        ref = bins[:i].copy()
        ref[-1] += bins[i:].sum()
        chunk = (np.arange(i) * levels) // i
        q = np.zeros(i)
        for c in range(levels):
            m = (chunk == c) & (bins[:i] > 0)
            if m.any():
                q[m] = bins[:i][m].sum() / m.sum()
        p = ref / total
        qn = q / q.sum() if q.sum() > 0 else q
        mask = p > 0
        if np.any(qn[mask] == 0):
            kl = math.inf
        else:
            kl = float(np.sum(p[mask] * np.log(p[mask] / qn[mask])))
        if kl <= best_kl:
            best_i, best_kl = i, kl
    return best_i
