"""Range-selection methods on known distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorkiln.quant.methods import METHODS, compute_range, entropy_threshold, entropy_threshold_loop
from tensorkiln.quant.observer import TensorStats


def _stats(x: np.ndarray) -> TensorStats:
    s = TensorStats()
    s.update(torch.from_numpy(x.astype(np.float32)))
    return s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_vectorized_equals_the_plain_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.abs(np.concatenate([rng.standard_normal(20000) * (seed + 1), rng.standard_normal(50) * 20]))
    if seed == 1:
        x[:5000] = 0.0  # a ReLU's spike at zero
    # 512 bins keep the plain loop quick; the algorithm does not depend on the bin count
    h, _ = np.histogram(x, bins=512, range=(0, x.max() * 1.0001))
    assert entropy_threshold(h) == entropy_threshold_loop(h)


def test_entropy_clips_outliers() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(100_000), [60.0, -55.0]])
    lo, hi = compute_range("entropy", _stats(x))
    assert 2.0 < hi < 10.0 and -10.0 < lo < -2.0  # far inside ±60, outside most of the mass


def test_percentiles_and_minmax() -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal(200_000))
    s = _stats(x)
    assert compute_range("minmax", s) == (0.0, float(np.float32(x.max())))
    for p in (99.9, 99.99):
        _, hi = compute_range(f"percentile-{p:g}", s)
        want = np.percentile(x, p)
        assert abs(hi - want) <= 2 * s.bin_width + 1e-3 * want, (p, hi, want)


def test_mse_between_percentile_and_max_for_gaussian() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200_000)
    lo, hi = compute_range("mse", _stats(x))
    assert 2.5 < hi < float(np.abs(x).max()) and lo < 0


def test_ranges_always_contain_zero() -> None:
    s = _stats(np.array([2.0, 3.0, 5.0]))
    for m in METHODS:
        lo, hi = compute_range(m, s)
        assert lo == 0.0 and hi > 0.0, m


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown calibration method"):
        compute_range("kl", _stats(np.ones(3)))
