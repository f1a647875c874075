"""com.microsoft Attention / MultiHeadAttention / RotaryEmbedding against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.backends.cpu.test_ops_contrib import MS, randn, rng, run_both

pytest.importorskip("onnxruntime")

B, S, N, H = 2, 5, 2, 4
D = N * H


def _mask(kind: str, T: int) -> np.ndarray | None:
    if kind == "none":
        return None
    if kind == "1d":
        return np.array([T, T - 2], np.int32)
    if kind == "1d_end_start":
        return np.array([T, T - 1, 0, 1], np.int32)
    if kind == "2d":
        m = np.ones((B, T), np.int32)
        m[1, -2:] = 0
        return m
    if kind == "3d":
        return (rng.random((B, S, T)) > 0.3).astype(np.int32) | np.eye(S, T, dtype=np.int32)[None]
    raise AssertionError(kind)


@pytest.mark.parametrize("mask", ["none", "1d", "1d_end_start", "2d", "3d"])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention(mask: str, causal: int) -> None:
    feeds = {"x": randn(B, S, D)}
    inits = {"w": randn(D, 3 * D) * 0.5, "b": randn(3 * D)}
    ins = ["x", "w", "b"]
    m = _mask(mask, S)
    if m is not None:
        feeds["m"] = m
        ins.append("m")
    node = helper.make_node("Attention", ins, ["y"], domain=MS, num_heads=N, unidirectional=causal)
    run_both(node, feeds, ["y"], inits)


def test_attention_past_present() -> None:
    P = 3
    feeds = {"x": randn(B, S, D), "past": randn(2, B, N, P, H)}
    inits = {"w": randn(D, 3 * D) * 0.5, "b": randn(3 * D)}
    node = helper.make_node("Attention", ["x", "w", "b", "", "past"], ["y", "present"],
                            domain=MS, num_heads=N, unidirectional=1)
    run_both(node, feeds, ["y", "present"], inits)


def test_attention_bias_input() -> None:
    feeds = {"x": randn(B, S, D), "m": _mask("2d", S), "ab": randn(1, N, S, S)}
    inits = {"w": randn(D, 3 * D) * 0.5, "b": randn(3 * D)}
    node = helper.make_node("Attention", ["x", "w", "b", "m", "", "ab"], ["y"], domain=MS, num_heads=N)
    run_both(node, feeds, ["y"], inits)


def test_attention_qkv_hidden_sizes_and_scale() -> None:
    Dv = 2 * D
    feeds = {"x": randn(B, S, D)}
    inits = {"w": randn(D, 2 * D + Dv) * 0.5, "b": randn(2 * D + Dv)}
    node = helper.make_node("Attention", ["x", "w", "b"], ["y"], domain=MS, num_heads=N,
                            qkv_hidden_sizes=[D, D, Dv], scale=0.3)
    run_both(node, feeds, ["y"], inits)


@pytest.mark.parametrize("mask", ["none", "1d", "2d", "3d"])
def test_mha_cross(mask: str) -> None:
    L = 6
    feeds = {"q": randn(B, S, D), "k": randn(B, L, D), "v": randn(B, L, D)}
    ins = ["q", "k", "v", "bias"]
    m = _mask(mask, L)
    if m is not None:
        feeds["m"] = m
        ins.append("m")
    node = helper.make_node("MultiHeadAttention", ins, ["y"], domain=MS, num_heads=N)
    run_both(node, feeds, ["y"], {"bias": randn(3 * D)})


def test_mha_self_with_past() -> None:
    P = 3
    feeds = {"q": randn(B, S, D), "k": randn(B, S, D), "v": randn(B, S, D),
             "pk": randn(B, N, P, H), "pv": randn(B, N, P, H)}
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v", "", "", "", "pk", "pv"],
                            ["y", "prk", "prv"], domain=MS, num_heads=N, unidirectional=1)
    run_both(node, feeds, ["y", "prk", "prv"])


def test_mha_bnsh_kv_and_attention_bias() -> None:
    L = 4
    feeds = {"q": randn(B, S, D), "k": randn(B, N, L, H), "v": randn(B, N, L, H),
             "ab": randn(B, N, S, L)}
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v", "", "", "ab"], ["y"],
                            domain=MS, num_heads=N, scale=0.7)
    run_both(node, feeds, ["y"])


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("layout", ["bsd", "bnsh"])
def test_rotary(interleaved: int, layout: str) -> None:
    Hr, maxp = 8, 16
    x = randn(B, S, N * Hr) if layout == "bsd" else randn(B, N, S, Hr)
    feeds = {"x": x, "pos": rng.integers(0, maxp, (B, S)).astype(np.int64)}
    inits = {"cos": randn(maxp, Hr // 2), "sin": randn(maxp, Hr // 2)}
    kw = {"num_heads": N} if layout == "bsd" else {}
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain=MS,
                            interleaved=interleaved, **kw)
    run_both(node, feeds, ["y"], inits)


def test_rotary_partial_dim_and_offset() -> None:
    Hr, rot, maxp = 8, 4, 16
    feeds = {"x": randn(B, S, N * Hr), "pos": np.array([3], np.int64)}
    inits = {"cos": randn(maxp, rot // 2), "sin": randn(maxp, rot // 2)}
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain=MS,
                            num_heads=N, rotary_embedding_dim=rot)
    run_both(node, feeds, ["y"], inits)


# ------------------------------------------------------------------ GroupQueryAttention

KVN = 1  # N = 2 query heads share one KV head
GH = 16  # onnxruntime wants a head size that is a multiple of 16 (rotary)
GD = N * GH


def _gqa_node(ins: list[str], **kw: object) -> object:
    return helper.make_node("GroupQueryAttention", ins, ["y", "pk", "pv"], domain=MS, num_heads=N,
                            kv_num_heads=KVN, **kw)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("rotary", [0, 1])
def test_gqa_prompt(packed: bool, rotary: int) -> None:
    kv = KVN * GH
    feeds: dict[str, np.ndarray] = {}
    if packed:
        feeds["q"] = randn(B, S, GD + 2 * kv)
        ins = ["q", "", ""]
    else:
        feeds.update(q=randn(B, S, GD), k=randn(B, S, kv), v=randn(B, S, kv))
        ins = ["q", "k", "v"]
    feeds["sl"] = np.full((B,), S - 1, np.int32)
    feeds["tot"] = np.array(S, np.int32)
    ins += ["", "", "sl", "tot"]
    inits = {}
    if rotary:
        inits = {"cos": randn(16, GH // 2), "sin": randn(16, GH // 2)}
        ins += ["cos", "sin"]
    run_both(_gqa_node(ins, do_rotary=rotary), feeds, ["y", "pk", "pv"], inits)


@pytest.mark.parametrize(("window", "softcap"), [(-1, 0.0), (2, 0.0), (-1, 3.0)])
def test_gqa_token_generation(window: int, softcap: float) -> None:
    P = 8  # past buffer length; entries hold 5 and 3 valid positions
    kv = KVN * GH
    feeds = {"q": randn(B, 1, GD), "k": randn(B, 1, kv), "v": randn(B, 1, kv),
             "pk_in": randn(B, KVN, P, GH), "pv_in": randn(B, KVN, P, GH),
             "sl": np.array([5, 3], np.int32), "tot": np.array(6, np.int32)}
    inits = {"cos": randn(16, GH // 2), "sin": randn(16, GH // 2)}
    node = _gqa_node(["q", "k", "v", "pk_in", "pv_in", "sl", "tot", "cos", "sin"], do_rotary=1,
                     local_window_size=window, softcap=softcap)
    run_both(node, feeds, ["y", "pk", "pv"], inits)


def test_gqa_attention_bias() -> None:
    P, kv = 8, KVN * GH
    feeds = {"q": randn(B, 1, GD), "k": randn(B, 1, kv), "v": randn(B, 1, kv),
             "pk_in": randn(B, KVN, P, GH), "pv_in": randn(B, KVN, P, GH),
             "sl": np.array([5, 5], np.int32), "tot": np.array(6, np.int32), "ab": randn(B, 1, 1, 6)}
    node = _gqa_node(["q", "k", "v", "pk_in", "pv_in", "sl", "tot", "", "", "", "ab"])
    run_both(node, feeds, ["y", "pk", "pv"])
