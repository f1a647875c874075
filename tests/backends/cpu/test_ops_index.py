"""Index/select CPU kernels (ops_index, ops_select): tricky ONNX semantics.

numpy or the ONNX reference evaluator is the reference; NonMaxSuppression is compared with
onnxruntime on random boxes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.backends.cpu import util
from tests.backends.cpu.util import Const, same


def run_node(op: str, args: list[Any], opset: int = 18, n_out: int = 1, **attrs: Any) -> Any:
    return util.run_node(op, args, opset, n_out, **attrs)


def reference(op: str, args: list[Any], opset: int = 18, n_out: int = 1, **attrs: Any) -> list[np.ndarray]:
    return util.oracle_node(op, args, opset, n_out, **attrs)


I64 = np.int64
BIG = np.iinfo(np.int64).max
X = np.arange(60, dtype=np.float32).reshape(3, 4, 5)


# ---------------------------------------------------------------------------- Slice


@pytest.mark.parametrize(
    "starts,ends,axes,steps",
    [
        ([-1], [-BIG - 1], [2], [-1]),  # full reverse
        ([10], [-10], [1], [-2]),  # clamped, negative step
        ([3, -1], [0, 1], [2, 0], [-1, -1]),
        ([0, 1], [BIG, 3], [0, -2], [2, 1]),
        ([4], [2], [2], [1]),  # empty
        ([1], [BIG], [-1], [3]),
    ],
)
@pytest.mark.parametrize("const", [True, False])
def test_slice_matches_python_slicing(starts: list, ends: list, axes: list, steps: list, const: bool) -> None:
    def arg(v: list[int]) -> Any:
        a = np.array(v, I64)
        return Const(a) if const else a

    got = run_node("Slice", [X, arg(starts), arg(ends), arg(axes), arg(steps)], opset=13)
    index = [slice(None)] * 3
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[a] = slice(s, e, st)
    same(got, X[tuple(index)])


def test_slice_legacy_attrs_and_default_axes() -> None:
    same(run_node("Slice", [X], opset=9, starts=[1, 0], ends=[BIG, -1]), X[1:, :-1])
    same(run_node("Slice", [X, np.array([1], I64), np.array([2], I64)], opset=13), X[1:2])


# ---------------------------------------------------------------------------- Gather family


def test_gather_negative_and_nd_indices() -> None:
    idx = np.array([[0, -1], [-2, 1]], I64)
    same(run_node("Gather", [X, idx], axis=1), np.take(X, np.where(idx < 0, idx + 4, idx), axis=1))
    same(run_node("Gather", [X, Const(idx.astype(np.int32))], axis=-1), np.take(X, idx % 5, axis=-1))
    same(run_node("Gather", [X, np.array(-1, I64)], axis=0), X[-1])


def test_gather_elements_and_nd_batch_dims() -> None:
    idx = np.array([[[0, -1, 2, 1, 0]]] * 3, I64).repeat(2, axis=1)
    same(run_node("GatherElements", [X, idx], axis=1), np.take_along_axis(X, idx % 4, axis=1))
    data = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4)
    ind = np.array([[[1, 2], [0, -1]], [[2, 3], [1, 0]]], I64)
    got = run_node("GatherND", [data, ind], batch_dims=1)
    want = np.stack([np.stack([data[b][tuple(i)] for i in ind[b] % [3, 4]]) for b in range(2)])
    same(got, want)


# ---------------------------------------------------------------------------- Scatter family


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd_and_elements_reductions(reduction: str) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(-5, 5, (4, 3)).astype(np.float32)
    ind = np.array([[1], [3], [1]] if reduction != "none" else [[1], [-1]], I64)
    upd = rng.integers(-5, 5, (ind.shape[0], 3)).astype(np.float32)
    same(
        run_node("ScatterND", [data, ind, upd], reduction=reduction),
        reference("ScatterND", [data, ind % 4, upd], reduction=reduction)[0],
    )
    eidx = np.array([[0, 2], [1, 0]], I64) if reduction == "none" else np.array([[0, 0], [2, -3]], I64)
    eupd = rng.integers(-5, 5, (2, 2)).astype(np.float32)
    got = run_node("ScatterElements", [data, eidx, eupd], axis=1, reduction=reduction)
    want = reference("ScatterElements", [data, eidx % 3, eupd], axis=1, reduction=reduction)[0]
    same(got, want)


def test_scatter_legacy_and_unsigned_data() -> None:
    data = np.zeros((2, 3), np.uint32)
    idx = np.array([[2, 0]], I64)
    upd = np.array([[7, 9]], np.uint32)
    want = data.copy()
    want[0, 2], want[0, 0] = 7, 9
    same(run_node("Scatter", [data, idx, upd], opset=10, axis=1), want)
    same(run_node("GatherElements", [want, idx], axis=1), np.array([[7, 9]], np.uint32))


# ---------------------------------------------------------------------------- OneHot / NonZero / Compress


def test_one_hot_negative_indices_and_axis() -> None:
    idx = np.array([[1, -1], [5, 0]], I64)  # 5 is out of range: all off
    vals = np.array([2, 9], np.int32)
    got = run_node("OneHot", [idx, np.array(3.0, np.float32), vals], axis=1)
    want = np.full((2, 3, 2), 2, np.int32)
    want[0, 1, 0] = want[0, 2, 1] = want[1, 0, 1] = 9
    same(got, want)


def test_nonzero_and_compress() -> None:
    x = np.array([[0, 1, 0], [2, 0, 3]], np.int32)
    same(run_node("NonZero", [x]), np.array(np.nonzero(x), I64))
    cond = np.array([True, False])  # shorter than the axis: the rest is dropped
    same(run_node("Compress", [X, cond], axis=1), X[:, :1])
    same(run_node("Compress", [x, np.array([0, 1, 1, 0, 1], bool)]), np.array([1, 0, 0], np.int32))


# ---------------------------------------------------------------------------- TopK / Unique


@pytest.mark.parametrize("largest", [1, 0])
def test_topk_ties_keep_lower_index_first(largest: int) -> None:
    x = np.array([[3, 1, 3, 2, 1, 3], [0, 0, 0, 0, 0, 0]], np.float32)
    vals, idx = run_node("TopK", [x, np.array([3], I64)], opset=11, n_out=2, largest=largest)
    rvals, ridx = reference("TopK", [x, np.array([3], I64)], opset=11, n_out=2, largest=largest)
    same(vals, rvals)
    same(idx, ridx)
    vals, idx = run_node("TopK", [x], opset=9, n_out=2, k=1, axis=0)
    same(idx, np.array([[0, 0, 0, 0, 0, 0]], I64))


@pytest.mark.parametrize("sort", [0, 1])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_unique_matches_reference(sort: int, axis: int | None) -> None:
    x = np.array([[2, 1, 2], [0, 5, 0], [2, 1, 2], [0, 5, 0]], np.int64)
    attrs: dict[str, Any] = {"sorted": sort}
    if axis is not None:
        attrs["axis"] = axis
    got = run_node("Unique", [x], opset=11, n_out=4, **attrs)
    # numpy twin (the reference evaluator mishandles sorted=0 with axis != 0 or no axis)
    flat = x.reshape(-1) if axis is None else x
    y, first, inv, cnt = np.unique(flat, True, True, True, axis=0 if axis is None else axis)
    if not sort:
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        y, first, cnt, inv = np.take(flat, first[order], axis=axis or 0), first[order], cnt[order], rank[inv]
    want = [y, first.astype(I64), inv.reshape(-1).astype(I64), cnt.astype(I64)]
    for g, w in zip(got, want):
        same(g, w)


# ---------------------------------------------------------------------------- NonMaxSuppression


@pytest.mark.parametrize("center", [0, 1])
def test_nms_matches_onnxruntime(center: int) -> None:
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(center)
    xy = rng.uniform(0, 10, (2, 40, 2))
    wh = rng.uniform(1, 4, (2, 40, 2))
    if center:
        boxes = np.concatenate([xy, wh], -1)
    else:  # [y1, x1, y2, x2], some with swapped corners
        boxes = np.concatenate([xy[..., ::-1], (xy + wh)[..., ::-1]], -1)
        boxes[:, ::3] = boxes[:, ::3][..., [2, 3, 0, 1]]
    boxes = boxes.astype(np.float32)
    scores = rng.uniform(0, 1, (2, 3, 40)).astype(np.float32)
    scores[0, 0, 5] = scores[0, 0, 6]  # a tie
    args = [boxes, scores, np.array([6], I64), np.array([0.3], np.float32), np.array([0.2], np.float32)]
    got = run_node("NonMaxSuppression", args, opset=13, center_point_box=center)
    want = util.oracle_node("NonMaxSuppression", args, 13, oracle="ort", center_point_box=center)[0]
    same(got, want)
    empty = run_node("NonMaxSuppression", [boxes, scores], opset=13)  # max_output_boxes defaults to 0
    same(empty, np.zeros((0, 3), I64))


def test_topk_partial_path_orders_ties_like_a_stable_sort() -> None:
    import torch

    from tensorkiln.backends.cpu.ops_select import _topk_partial

    gen = torch.Generator().manual_seed(0)
    used = 0
    for trial in range(100):
        n = 64
        x = torch.randn(3, n, generator=gen)
        if trial % 2:  # ties inside the selection, none straddling the k-th place
            x[:, :4] = 10.0
            x[:, 30:34] = 10.0
        k = 10 if trial % 2 else 6  # 8 tied maxima all inside the top 10
        for largest in (True, False):
            r = _topk_partial(x, k, 1, largest)
            v, i = torch.sort(x, dim=1, descending=largest, stable=True)
            if r is not None:
                used += 1
                assert torch.equal(r[0], v[:, :k]) and torch.equal(r[1], i[:, :k])
    assert used > 150
    x = torch.tensor([[5.0, 1.0, 5.0, 5.0] + [0.0] * 20])
    assert _topk_partial(x, 2, 1, True) is None  # a tie straddles the cut: the caller sorts
