"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss CPU kernels against onnxruntime."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest

import tensorkiln
from tests.backends.cpu import util

compare = partial(util.compare, opset=22, rtol=1e-5, atol=1e-6)


def _data(shape: tuple[int, ...], ignore: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    t = rng.integers(0, shape[1], (shape[0], *shape[2:])).astype(np.int64)
    if ignore is not None:
        t.reshape(-1)[::3] = ignore  # some targets ignored (may be out of the class range)
    return x, t


CASES = [
    ("NC", (4, 5)),
    ("NCd1", (3, 5, 2)),
    ("NCd1d2", (2, 4, 3, 2)),
]


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("ignore", [None, 1, -100], ids=["no_ii", "ii_1", "ii_neg"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_nll_loss(reduction: str, ignore: int | None, weighted: bool, shape: tuple[int, ...]) -> None:
    x, t = _data(shape, ignore)
    x = np.log(np.exp(x) / np.exp(x).sum(1, keepdims=True)).astype(np.float32)
    w = np.linspace(0.5, 2.0, shape[1]).astype(np.float32) if weighted else None
    attrs: dict[str, Any] = {"reduction": reduction}
    if ignore is not None:
        attrs["ignore_index"] = ignore
    compare("NegativeLogLikelihoodLoss", [("x", x), ("t", t), ("w", w)], attrs)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("ignore", [None, 2], ids=["no_ii", "ii_2"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("log_prob", [False, True], ids=["loss", "loss+log_prob"])
def test_softmax_cross_entropy_loss(reduction: str, ignore: int | None, weighted: bool, log_prob: bool) -> None:
    x, t = _data((3, 5, 2), ignore, seed=1)
    w = np.linspace(0.5, 2.0, 5).astype(np.float32) if weighted else None
    attrs: dict[str, Any] = {"reduction": reduction}
    if ignore is not None:
        attrs["ignore_index"] = ignore
    compare("SoftmaxCrossEntropyLoss", [("x", x), ("t", t), ("w", w)], attrs, opset=13, n_out=2 if log_prob else 1)


def test_mean_over_non_ignored_elements_only() -> None:
    x = np.log(np.full((4, 3), 1 / 3, np.float32))
    t = np.array([0, 1, 7, 2], np.int64)  # one ignored, out of range
    m = util.single_node("NegativeLogLikelihoodLoss", [("x", x), ("t", t)], {"ignore_index": 7}, opset=22)
    y = tensorkiln.build(m, optimize=False).run({"x": x, "t": t})["y0"]
    np.testing.assert_allclose(y, np.log(3), rtol=1e-6)
