"""CPU kernels: assorted operators.

* ``CumProd`` (opset 26): cumulative product along a scalar ``axis`` input, ``exclusive``
  and ``reverse``; the result keeps the input type.
* ``BitCast`` (opset 26): reinterprets the bits as type ``to`` of the same width.
* ``TensorScatter`` (opset 24): writes ``update`` into a copy of ``past_cache`` along
  ``axis`` (default -2) at per-batch offsets ``write_indices`` (default 0); ``circular``
  mode wraps around the cache length.
* ``TfIdfVectorizer`` (opset 9, integer pools only): counts n-grams of length
  ``min_gram_length``..``max_gram_length`` (n ≥ 2 also with up to ``max_skip_count``
  skipped items between members; unigrams once) and weights them by ``mode``.
* ``ai.onnx.ml`` ``ArrayFeatureExtractor``, ``Binarizer`` and ``TreeEnsemble`` (ml opset 5;
  all node modes incl. set membership, missing values tracking true, the four aggregate
  functions; ``post_transform`` NONE only). Under MIN/MAX a target no tree reaches is 0,
  as in onnxruntime.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tensorkiln.backends.cpu.base import (
    BuildContext,
    Factory,
    Kernel,
    attr,
    bad_model,
    const_input,
    torch_dtype,
    unsupported,
)
from tensorkiln.ir import Node

Tensor = torch.Tensor


# ---------------------------------------------------------------- CumProd

def _cumprod_along(x: Tensor, axis: int, exclusive: bool, reverse: bool) -> Tensor:
    r = x.dim()
    if not -r <= axis < r:
        raise ValueError(f"axis {axis} is out of range for rank {r}")
    axis %= r
    if reverse:
        x = x.flip(axis)
    if exclusive:
        n = x.shape[axis]
        ones = torch.ones_like(x.narrow(axis, 0, min(n, 1)))
        y = torch.cat((ones, torch.cumprod(x.narrow(axis, 0, max(n - 1, 0)), axis, dtype=x.dtype)), axis)
        y = y.narrow(axis, 0, n)
    else:
        y = torch.cumprod(x, axis, dtype=x.dtype)
    return y.flip(axis) if reverse else y


def _cumprod(node: Node, ctx: BuildContext) -> Kernel:
    exclusive = bool(attr(node, "exclusive", 0))
    reverse = bool(attr(node, "reverse", 0))
    c = const_input(node, 1)
    if c is not None:
        if np.ndim(c) != 0:
            raise bad_model(node, "axis must be a scalar")
        ax = int(c)
        return lambda x, axis: _cumprod_along(x, ax, exclusive, reverse)

    def k(x: Tensor, axis: Tensor) -> Tensor:
        if axis.dim() != 0:
            raise ValueError("axis must be a scalar")
        return _cumprod_along(x, int(axis.item()), exclusive, reverse)

    return k


# ---------------------------------------------------------------- BitCast

def _bitcast(node: Node, ctx: BuildContext) -> Kernel:
    to = attr(node, "to")
    if to is None:
        raise bad_model(node, "missing attribute 'to'")
    try:
        dt = torch_dtype(int(to))
    except Exception as e:
        raise unsupported(node, f"to={to}: {e}") from None
    size = torch.empty((), dtype=dt).element_size()

    def k(x: Tensor) -> Tensor:
        if x.element_size() != size:
            raise ValueError(f"BitCast needs equal bit widths: {x.dtype} → {dt}")
        return x.contiguous().view(dt).clone()

    return k


# ---------------------------------------------------------------- TensorScatter

def _tensor_scatter(node: Node, ctx: BuildContext) -> Kernel:
    mode = attr(node, "mode", "linear")
    if mode not in ("linear", "circular"):
        raise unsupported(node, f"mode={mode!r} (expected 'linear' or 'circular')")
    axis_attr = int(attr(node, "axis", -2))
    circular = mode == "circular"

    def k(cache: Tensor, update: Tensor, write_indices: Tensor | None = None) -> Tensor:
        r = cache.dim()
        if update.dim() != r:
            raise ValueError("past_cache and update must have the same rank")
        axis = axis_attr % r
        if axis == 0:
            raise ValueError("axis cannot be the batch axis")
        for i in range(r):
            if i != axis and cache.shape[i] != update.shape[i]:
                raise ValueError(f"past_cache {tuple(cache.shape)} and update {tuple(update.shape)} differ in dim {i}")
        max_len = cache.shape[axis]
        seq = update.shape[axis]
        if seq > max_len:
            raise ValueError(f"update length {seq} exceeds the cache length {max_len}")
        b = cache.shape[0]
        start = (torch.zeros(b, dtype=torch.int64) if write_indices is None
                 else write_indices.reshape(b).to(torch.int64))
        pos = start.reshape(b, 1) + torch.arange(seq)  # (B, seq)
        if circular:
            pos = pos % max_len
        elif seq and (bool((start < 0).any()) or int(pos.max()) >= max_len):
            raise ValueError("write_indices + update length run past the cache")
        shape = [1] * r
        shape[0], shape[axis] = b, seq
        idx = pos.reshape(shape).expand(update.shape)
        return cache.clone().scatter_(axis, idx, update.to(cache.dtype))

    return k


# ---------------------------------------------------------------- TfIdfVectorizer

def _tfidf_vectorizer(node: Node, ctx: BuildContext) -> Kernel:
    if attr(node, "pool_strings"):
        raise unsupported(node, "string pools (pool_strings)")
    pool = [int(v) for v in attr(node, "pool_int64s", []) or []]
    counts = [int(v) for v in attr(node, "ngram_counts", []) or []]
    indexes = [int(v) for v in attr(node, "ngram_indexes", []) or []]
    weights = [float(v) for v in attr(node, "weights", []) or []]
    min_n = int(attr(node, "min_gram_length", 1))
    max_n = int(attr(node, "max_gram_length", 1))
    max_skip = int(attr(node, "max_skip_count", 0))
    mode = attr(node, "mode", "TF")
    if mode not in ("TF", "IDF", "TFIDF"):
        raise unsupported(node, f"mode={mode!r}")
    if not indexes:
        raise bad_model(node, "ngram_indexes is empty")
    out_size = max(indexes) + 1

    # the pool's n-grams of each wanted length, with the output column of each
    vocab = sorted(set(pool))
    base = len(vocab) + 1  # item id 0 = not in the pool
    grams: dict[int, tuple[Tensor, Tensor]] = {}  # n → (sorted keys, their columns)
    gid = 0
    for i, start in enumerate(counts):
        n = i + 1
        end = counts[i + 1] if i + 1 < len(counts) else len(pool)
        m = max(end - start, 0) // n
        if min_n <= n <= max_n and m:
            if base ** n >= 2**62:
                raise unsupported(node, f"{n}-grams over a pool of {len(vocab)} distinct items")
            keys, cols = [], []
            for j in range(m):
                key = 0
                for item in pool[start + j * n:start + (j + 1) * n]:
                    key = key * base + vocab.index(item) + 1
                keys.append(key)
                if gid + j >= len(indexes):
                    raise bad_model(node, "fewer ngram_indexes than n-grams in the pool")
                cols.append(indexes[gid + j])
            kt = torch.tensor(keys, dtype=torch.int64)
            order = torch.argsort(kt)
            grams[n] = (kt[order], torch.tensor(cols, dtype=torch.int64)[order])
        gid += m
    vocab_t = torch.tensor(vocab, dtype=torch.int64)
    w_t = torch.tensor(weights, dtype=torch.float32) if weights else None

    def k(x: Tensor) -> Tensor:
        if x.dim() > 2:
            raise ValueError(f"input must be [C] or [B, C], got shape {tuple(x.shape)}")
        rows = x.reshape(1, -1) if x.dim() < 2 else x
        b, length = rows.shape
        freq = torch.zeros((b, out_size), dtype=torch.float32)
        if grams and length and vocab:
            xi = rows.to(torch.int64)
            pos = torch.searchsorted(vocab_t, xi).clamp(max=len(vocab) - 1)
            ids = torch.where(vocab_t[pos] == xi, pos + 1, torch.zeros((), dtype=torch.int64))
            for n, (keys, cols) in grams.items():
                for skip in range(1, (max_skip + 1 if n > 1 else 1) + 1):
                    span = (n - 1) * skip
                    if span >= length:
                        break
                    starts = length - span
                    key = torch.zeros((b, starts), dtype=torch.int64)
                    for t in range(n):
                        key = key * base + ids[:, t * skip:t * skip + starts]
                    p = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
                    hit = keys[p] == key
                    freq.scatter_add_(1, cols[p], hit.to(torch.float32))
        if mode == "TF":
            y = freq
        elif mode == "IDF":
            y = (w_t.expand(b, -1) if w_t is not None else torch.ones_like(freq)) * (freq > 0)
        else:
            y = freq * w_t if w_t is not None else freq
        return y if x.dim() == 2 else y.reshape(out_size)

    return k


# ---------------------------------------------------------------- ai.onnx.ml

def _array_feature_extractor(node: Node, ctx: BuildContext) -> Kernel:
    def k(x: Tensor, indices: Tensor) -> Tensor:
        idx = indices.reshape(-1).to(torch.int64)
        if bool(((idx < 0) | (idx >= x.shape[-1])).any()):
            raise ValueError(f"indices out of range for a last dimension of {x.shape[-1]}")
        y = torch.index_select(x, x.dim() - 1, idx)
        return y.reshape(1, -1) if x.dim() == 1 else y

    return k


def _binarizer(node: Node, ctx: BuildContext) -> Kernel:
    threshold = float(attr(node, "threshold", 0.0))
    return lambda x: (x > threshold).to(x.dtype)


_LEQ, _LT, _GTE, _GT, _EQ, _NEQ, _MEMBER = range(7)


def _tree_ensemble(node: Node, ctx: BuildContext) -> Kernel:
    def arr(name: str, dtype: type, required: bool = True) -> np.ndarray:
        v = attr(node, name)
        if v is None:
            if required:
                raise bad_model(node, f"missing attribute {name!r}")
            return np.zeros(0, dtype)
        return np.asarray(v, dtype=dtype).reshape(-1)

    feat = arr("nodes_featureids", np.int64)
    splits = arr("nodes_splits", np.float64)
    modes = arr("nodes_modes", np.int64)
    t_ids, f_ids = arr("nodes_truenodeids", np.int64), arr("nodes_falsenodeids", np.int64)
    t_leaf, f_leaf = arr("nodes_trueleafs", np.int64), arr("nodes_falseleafs", np.int64)
    leaf_t, leaf_w = arr("leaf_targetids", np.int64), arr("leaf_weights", np.float64)
    roots = arr("tree_roots", np.int64)
    mtt = arr("nodes_missing_value_tracks_true", np.int64, required=False)
    members = arr("membership_values", np.float64, required=False)
    n_targets = int(attr(node, "n_targets", 0) or 0)
    agg = int(attr(node, "aggregate_function", 1))
    post = int(attr(node, "post_transform", 0))
    if agg not in (0, 1, 2, 3):
        raise unsupported(node, f"aggregate_function={agg}")
    if post != 0:
        # onnxruntime and ONNX's reference disagree on these; only NONE is well defined
        raise unsupported(node, f"post_transform={post} (only 0, NONE)")
    n_nodes = len(feat)
    if not (len(splits) == len(modes) == len(t_ids) == len(f_ids) == len(t_leaf) == len(f_leaf) == n_nodes):
        raise bad_model(node, "the nodes_* attributes differ in length")
    if len(mtt) == 0:
        mtt = np.zeros(n_nodes, np.int64)
    # set-membership nodes: their members, NaN-separated, in node order
    max_m = 1
    sets: list[list[float]] = []
    it = iter(members.tolist())
    for i in range(n_nodes):
        s: list[float] = []
        if modes[i] == _MEMBER:
            for v in it:
                if math.isnan(v):
                    break
                s.append(v)
        sets.append(s)
        max_m = max(max_m, len(s))
    table = np.full((n_nodes, max_m), np.nan)
    for i, s in enumerate(sets):
        table[i, :len(s)] = s

    t = torch.from_numpy
    feat_t, split_t, mode_t = t(feat), t(splits), t(modes)
    tid_t, fid_t = t(t_ids), t(f_ids)
    tleaf_t, fleaf_t = t(t_leaf).bool(), t(f_leaf).bool()
    mtt_t, table_t = t(mtt).bool(), t(table)
    leaf_target, leaf_weight = t(leaf_t), t(leaf_w)
    roots_t = t(roots)
    root_is_leaf = tleaf_t[roots_t] & fleaf_t[roots_t] & (tid_t[roots_t] == fid_t[roots_t])
    n_trees = len(roots)

    def k(x: Tensor) -> Tensor:
        xd = x.to(torch.float64).reshape(x.shape[0], -1)
        n = xd.shape[0]
        cur = roots_t.expand(n, n_trees).clone()
        leaf = root_is_leaf.expand(n, n_trees).clone()
        for _ in range(n_nodes + 1):
            if bool(leaf.all()):
                break
            c = cur.clamp(0, n_nodes - 1)
            v = torch.gather(xd, 1, feat_t[c])
            s = split_t[c]
            m = mode_t[c]
            go = torch.where(m == _LEQ, v <= s, torch.where(m == _LT, v < s, torch.where(
                m == _GTE, v >= s, torch.where(m == _GT, v > s, torch.where(
                    m == _EQ, v == s, torch.where(m == _NEQ, v != s,
                                                  (v.unsqueeze(-1) == table_t[c]).any(-1)))))))
            go = go | (torch.isnan(v) & mtt_t[c])
            nxt = torch.where(go, tid_t[c], fid_t[c])
            nxt_leaf = torch.where(go, tleaf_t[c], fleaf_t[c])
            cur = torch.where(leaf, cur, nxt)
            leaf = leaf | nxt_leaf
        if not bool(leaf.all()):
            raise ValueError("tree traversal did not reach a leaf (cyclic tree?)")
        tgt = leaf_target[cur]
        wgt = leaf_weight[cur]
        if agg in (0, 1):
            y = torch.zeros((n, n_targets), dtype=torch.float64).scatter_add_(1, tgt, wgt)
            if agg == 0:
                y = y / n_trees
        else:
            y = torch.full((n, n_targets), math.inf if agg == 2 else -math.inf, dtype=torch.float64)
            y = y.scatter_reduce(1, tgt, wgt, "amin" if agg == 2 else "amax")
            # a target no tree voted for is 0, as in onnxruntime
            hits = torch.zeros((n, n_targets), dtype=torch.int64).scatter_add_(1, tgt, torch.ones_like(tgt))
            y = torch.where(hits > 0, y, torch.zeros((), dtype=y.dtype))
        return y.to(x.dtype if x.is_floating_point() else torch.float32)

    return k


KERNELS: dict[str, Factory] = {
    "CumProd": _cumprod,
    "BitCast": _bitcast,
    "TensorScatter": _tensor_scatter,
    "TfIdfVectorizer": _tfidf_vectorizer,
    "ai.onnx.ml::ArrayFeatureExtractor": _array_feature_extractor,
    "ai.onnx.ml::Binarizer": _binarizer,
    "ai.onnx.ml::TreeEnsemble": _tree_ensemble,
}
