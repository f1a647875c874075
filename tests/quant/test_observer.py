"""Per-tensor statistics: the histogram does not depend on batching or order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorkiln.quant.observer import NUM_BINS, TensorStats


def _observe(x: torch.Tensor, bs: int) -> TensorStats:
    s = TensorStats()
    for i in range(0, x.numel(), bs):
        s.update(x[i:i + bs])
    return s


def _data() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.randn(3000, generator=g) * 0.3, torch.randn(20, generator=g) * 7,
                      torch.tensor([1.0, 2.0, 4.0, -0.5, 0.0, 8.0])])


@pytest.mark.parametrize("bs", [1, 7, 64, 10_000])
def test_histogram_independent_of_batching_and_order(bs: int) -> None:
    x = _data()
    want = _observe(x, 10_000)
    g = torch.Generator().manual_seed(bs)
    got = _observe(x[torch.randperm(x.numel(), generator=g)], bs)
    assert got.top == want.top and got.min == want.min and got.max == want.max and got.count == want.count
    np.testing.assert_array_equal(got.hist, want.hist)


def test_range_is_smallest_power_of_two_above_max() -> None:
    s = TensorStats()
    s.update(torch.tensor([0.3, -0.9]))
    assert s.top == 1.0
    s.update(torch.tensor([1.0]))  # exactly a power of two: the range must exceed it
    assert s.top == 2.0
    assert s.hist.sum() == 3 and s.hist[NUM_BINS // 2] == 1  # 1.0 sits at the middle of [0, 2)


def test_histogram_counts_abs_values_exactly() -> None:
    x = _data()
    s = _observe(x, 100)
    want, _ = np.histogram(np.abs(x.numpy()), bins=NUM_BINS, range=(0.0, s.top))
    np.testing.assert_array_equal(s.hist, want)
    assert s.min == float(x.min()) and s.max == float(x.max())


def test_merge_equals_single_observer() -> None:
    x = _data()
    a, b = _observe(x[:1500], 50), _observe(x[1500:], 50)
    a.merge(b)
    want = _observe(x, 50)
    np.testing.assert_array_equal(a.hist, want.hist)
    assert (a.top, a.min, a.max, a.count) == (want.top, want.min, want.max, want.count)


def test_nonfinite_values_are_counted_and_left_out() -> None:
    s = TensorStats()
    s.update(torch.tensor([1.0, float("nan"), -2.0, float("inf")]))
    assert s.nonfinite == 2 and s.count == 2 and s.min == -2.0 and s.max == 1.0


def test_all_zero_and_integer_tensors() -> None:
    s = TensorStats()
    s.update(torch.zeros(10))
    assert s.top == 0.0 and s.hist[0] == 10 and s.amax == 0.0
    s.update(torch.arange(4))  # integer tensors are not observed
    assert s.count == 10
