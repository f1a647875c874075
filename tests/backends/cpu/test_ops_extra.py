"""CumProd, BitCast, TensorScatter, TfIdfVectorizer and ai.onnx.ml CPU kernels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from tests.backends.cpu import util
from tests.backends.cpu.util import Inputs


def run(op: str, inputs: Inputs, attrs: dict[str, Any] | None = None, opset: int = 26,
        consts: tuple[str, ...] = (), domain: str = "", oracle: util.Oracle | None = None) -> np.ndarray:
    """The node's output from tensorkiln (no graph passes), or from the ``oracle``."""
    return util.node_outputs(op, inputs, attrs, opset=opset, consts=consts, domain=domain,
                             domain_opset=5 if op == "TreeEnsemble" else 1, oracle=oracle)[0]


def ort_run(op: str, inputs: Inputs, attrs: dict[str, Any] | None = None, opset: int = 26,
            domain: str = "") -> np.ndarray:
    return run(op, inputs, attrs, opset, domain=domain, oracle="ort")


# ---------------------------------------------------------------- CumProd

def _cumprod_ref(x: np.ndarray, axis: int, exclusive: bool, reverse: bool) -> np.ndarray:
    if reverse:
        x = np.flip(x, axis)
    y = np.cumprod(x, axis=axis, dtype=x.dtype)
    if exclusive:
        y = np.concatenate([np.ones_like(np.take(x, [0], axis)), np.delete(y, -1, axis)], axis)
    return np.flip(y, axis) if reverse else y


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
@pytest.mark.parametrize("const_axis", [False, True])
def test_cumprod(exclusive: int, reverse: int, axis: int, dtype: Any, const_axis: bool) -> None:
    x = (np.arange(1, 13).reshape(3, 4) % 5 + 1).astype(dtype)
    y = run("CumProd", [("x", x), ("axis", np.array(axis, np.int32))], {"exclusive": exclusive, "reverse": reverse},
            consts=("axis",) if const_axis else ())
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y, _cumprod_ref(x, axis, bool(exclusive), bool(reverse)))


# ---------------------------------------------------------------- BitCast

@pytest.mark.parametrize(("src", "to", "npto"), [
    (np.float32, TensorProto.INT32, np.int32),
    (np.int32, TensorProto.FLOAT, np.float32),
    (np.int8, TensorProto.UINT8, np.uint8),
    (np.float16, TensorProto.INT16, np.int16),
    (np.int64, TensorProto.DOUBLE, np.float64),
])
def test_bitcast(src: Any, to: int, npto: Any) -> None:
    x = (np.arange(-3, 3).reshape(2, 3) * 1.5).astype(src)
    y = run("BitCast", [("x", x)], {"to": to})
    assert y.dtype == npto and y.shape == x.shape
    np.testing.assert_array_equal(y, x.view(npto))


def test_bitcast_rejects_width_change() -> None:
    with pytest.raises(Exception, match="bit width"):
        run("BitCast", [("x", np.zeros(3, np.float32))], {"to": TensorProto.INT64})


# ---------------------------------------------------------------- TensorScatter

@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("axis", [-2, 2])
def test_tensor_scatter(mode: str, axis: int) -> None:
    cache = np.arange(2 * 2 * 5 * 3, dtype=np.float32).reshape(2, 2, 5, 3)
    upd = -np.arange(1, 2 * 2 * 2 * 3 + 1, dtype=np.float32).reshape(2, 2, 2, 3)
    idx = np.array([1, 3] if mode == "linear" else [4, 2], np.int64)
    y = run("TensorScatter", [("c", cache), ("u", upd), ("i", idx)], {"mode": mode, "axis": axis}, opset=24)
    ref = cache.copy()
    for b in range(2):
        for s in range(2):
            ref[b, :, (idx[b] + s) % 5] = upd[b, :, s]
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(cache, np.arange(cache.size, dtype=np.float32).reshape(cache.shape))


def test_tensor_scatter_default_indices_and_overflow() -> None:
    cache, upd = np.zeros((2, 4, 3), np.float32), np.ones((2, 2, 3), np.float32)
    y = run("TensorScatter", [("c", cache), ("u", upd)], opset=24)
    np.testing.assert_array_equal(y[:, :2], 1)
    np.testing.assert_array_equal(y[:, 2:], 0)
    with pytest.raises(Exception, match="past the cache"):
        run("TensorScatter", [("c", cache), ("u", upd), ("i", np.array([0, 3], np.int64))], opset=24)


# ---------------------------------------------------------------- TfIdfVectorizer

TFIDF_BASE = {"ngram_counts": [0, 4], "ngram_indexes": [0, 1, 2, 3, 4, 5, 6],
              "pool_int64s": [2, 3, 5, 4, 5, 6, 7, 8, 6, 7]}


@pytest.mark.parametrize("grams", [(1, 1), (1, 2), (2, 2)], ids=["uni", "uni+bi", "bi"])
@pytest.mark.parametrize("skip", [0, 2])
@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("batched", [False, True])
def test_tfidf_vectorizer(grams: tuple[int, int], skip: int, mode: str, batched: bool) -> None:
    x = np.array([1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8], np.int32)
    if batched:
        x = np.stack([x, x[::-1]])
    attrs = {**TFIDF_BASE, "min_gram_length": grams[0], "max_gram_length": grams[1], "max_skip_count": skip,
             "mode": mode, "weights": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]}
    y = run("TfIdfVectorizer", [("x", x)], attrs, opset=9)
    ref = ort_run("TfIdfVectorizer", [("x", x)], attrs, opset=9)
    assert y.shape == ref.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, ref)


# ---------------------------------------------------------------- ai.onnx.ml

def test_array_feature_extractor() -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    idx = np.array([3, 0, 3], np.int64)
    y = run("ArrayFeatureExtractor", [("x", x), ("i", idx)], domain="ai.onnx.ml")
    np.testing.assert_array_equal(y, x[..., idx])
    y1 = run("ArrayFeatureExtractor", [("x", x[0, 0]), ("i", idx)], domain="ai.onnx.ml")
    np.testing.assert_array_equal(y1, x[0, 0][idx].reshape(1, 3))


def test_binarizer() -> None:
    x = np.array([[-1.0, 0.5, 0.6, 2.0]], np.float32)
    y = run("Binarizer", [("x", x)], {"threshold": 0.5}, domain="ai.onnx.ml")
    np.testing.assert_array_equal(y, np.array([[0, 0, 1, 1]], np.float32))


@pytest.mark.parametrize("aggregate", [0, 1, 2, 3], ids=["avg", "sum", "min", "max"])
def test_tree_ensemble(aggregate: int) -> None:
    # two trees over 2 features, 2 targets; modes LEQ / GT / EQ, one NaN tracking true
    attrs = {
        "nodes_featureids": [0, 1, 1],
        "nodes_splits": numpy_helper.from_array(np.array([0.5, 0.0, 1.0], np.float32)),
        "nodes_modes": numpy_helper.from_array(np.array([0, 3, 4], np.uint8)),
        "nodes_truenodeids": [1, 0, 2],
        "nodes_trueleafs": [0, 1, 1],
        "nodes_falsenodeids": [1, 1, 3],
        "nodes_falseleafs": [1, 1, 1],
        "nodes_missing_value_tracks_true": [1, 0, 0],
        "leaf_targetids": [0, 1, 0, 1],
        "leaf_weights": numpy_helper.from_array(np.array([1.0, 2.0, 3.0, 4.0], np.float32)),
        "tree_roots": [0, 2],
        "n_targets": 2,
        "aggregate_function": aggregate,
        "post_transform": 0,
    }
    x = np.array([[0.0, 1.0], [1.0, -1.0], [np.nan, 2.0], [0.2, 0.0]], np.float32)
    y = run("TreeEnsemble", [("x", x)], attrs, domain="ai.onnx.ml")
    ref = ort_run("TreeEnsemble", [("x", x)], attrs, domain="ai.onnx.ml")
    np.testing.assert_allclose(y, ref, rtol=1e-6)
