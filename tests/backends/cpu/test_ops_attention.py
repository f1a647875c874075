"""Attention, RotaryEmbedding, LinearAttention and CausalConvWithState CPU kernels.

Checked against onnxruntime where it implements the op (Attention, RotaryEmbedding) and
against ONNX's reference evaluator otherwise (the opset-27 ops).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
from onnx import helper

import tensorkiln
from tests.backends.cpu import util
from tests.backends.cpu.util import Inputs, rand

single_node = partial(util.single_node, opset=23)
compare = partial(util.compare, opset=23)


# ---------------------------------------------------------------- Attention

ATTN_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # name, shapes/extras, attributes
    ("4d", {}, {}),
    ("4d_causal", {}, {"is_causal": 1}),
    ("4d_causal_square", {"kv": 5}, {"is_causal": 1}),
    ("4d_gqa_causal", {"hq": 6, "hkv": 2}, {"is_causal": 1}),
    ("4d_float_mask", {"mask": "float"}, {}),
    ("4d_bool_mask_causal", {"mask": "bool"}, {"is_causal": 1}),
    ("4d_scale_softcap", {}, {"scale": 0.3, "softcap": 1.5}),
    ("4d_past_causal", {"past": 3}, {"is_causal": 1}),
    ("4d_past_mask", {"past": 3, "mask": "float"}, {}),
    ("3d_gqa", {"three_d": True, "hq": 4, "hkv": 2}, {"q_num_heads": 4, "kv_num_heads": 2}),
    ("3d_causal_past", {"three_d": True, "past": 2},
     {"q_num_heads": 2, "kv_num_heads": 2, "is_causal": 1}),
]


def _attn_inputs(spec: dict[str, Any]) -> Inputs:
    b, hq, hkv, q, kv, d, dv = 2, spec.get("hq", 2), spec.get("hkv", 2), 5, spec.get("kv", 7), 8, 6
    past = spec.get("past", 0)
    if spec.get("three_d"):
        Q, K, V = rand(b, q, hq * d, seed=1), rand(b, kv, hkv * d, seed=2), rand(b, kv, hkv * dv, seed=3)
    else:
        Q, K, V = rand(b, hq, q, d, seed=1), rand(b, hkv, kv, d, seed=2), rand(b, hkv, kv, dv, seed=3)
    mask = None
    if spec.get("mask") == "float":
        mask = rand(q, kv + past, seed=4)
    elif spec.get("mask") == "bool":
        mask = np.random.default_rng(5).random((b, 1, q, kv + past)) > 0.3
    ins: Inputs = [("Q", Q), ("K", K), ("V", V), ("attn_mask", mask)]
    if past:
        ins += [("past_key", rand(b, hkv, past, d, seed=6)), ("past_value", rand(b, hkv, past, dv, seed=7))]
    return ins


@pytest.mark.parametrize(("spec", "attrs"), [(c[1], c[2]) for c in ATTN_CASES], ids=[c[0] for c in ATTN_CASES])
@pytest.mark.parametrize("with_qk", [False, True], ids=["y", "y+qk"])
def test_attention_matches_onnxruntime(spec: dict[str, Any], attrs: dict[str, Any], with_qk: bool) -> None:
    # without the 4th output the fused torch kernel runs; with it the step-by-step path
    ins = _attn_inputs(spec)
    outs = ["Y", "present_key", "present_value"] if spec.get("past") else ["Y"]
    if with_qk:
        outs = ["Y", "present_key", "present_value", "qk"] if spec.get("past") else ["Y", "", "", "qk"]
    compare("Attention", ins, attrs, outputs=outs)


# mode 0 is the raw QK product (spec, function body and onnxruntime; ONNX's Python reference
# returns it softcapped); modes 2/3 against the reference, as onnxruntime's causal mask holds
# float-lowest where ONNX has -inf
@pytest.mark.parametrize(("mode", "oracle"), [(0, "ort"), (1, "ref"), (2, "ref"), (3, "ref")])
def test_attention_qk_matmul_output_modes(mode: int, oracle: util.Oracle) -> None:
    ins = _attn_inputs({"mask": "float"})
    compare("Attention", ins, {"qk_matmul_output_mode": mode, "softcap": 2.0, "is_causal": 1},
            outputs=["Y", "", "", "qk"], oracle=oracle)


@pytest.mark.parametrize("with_qk", [False, True])
def test_attention_fully_masked_row_is_zero(with_qk: bool) -> None:
    Q, K, V = rand(1, 2, 3, 4, seed=1), rand(1, 2, 5, 4, seed=2), rand(1, 2, 5, 4, seed=3)
    mask = np.ones((3, 5), bool)
    mask[1] = False
    outs = ["Y", "", "", "qk"] if with_qk else ["Y"]
    model = single_node("Attention", [("Q", Q), ("K", K), ("V", V), ("m", mask)],
                        {"qk_matmul_output_mode": 3}, outputs=outs)
    got = tensorkiln.build(model, optimize=False).run({"Q": Q, "K": K, "V": V, "m": mask})
    assert not np.isnan(got["Y"]).any()
    np.testing.assert_array_equal(got["Y"][:, :, 1], 0)
    if with_qk:
        np.testing.assert_array_equal(got["qk"][:, :, 1], 0)
        np.testing.assert_allclose(got["qk"][:, :, [0, 2]].sum(-1), 1, rtol=1e-6)


def test_attention_causal_with_past_is_bottom_right() -> None:
    # with a cache of P keys, query i sees keys 0..P+i: the last query sees everything
    Q, K, V = rand(1, 1, 2, 4, seed=1), rand(1, 1, 2, 4, seed=2), rand(1, 1, 2, 4, seed=3)
    pk, pv = rand(1, 1, 3, 4, seed=4), rand(1, 1, 3, 4, seed=5)
    model = single_node("Attention", [("Q", Q), ("K", K), ("V", V), ("m", None), ("pk", pk), ("pv", pv)],
                        {"is_causal": 1}, outputs=["Y", "", "", "qk"])
    model.graph.node[0].attribute.append(helper.make_attribute("qk_matmul_output_mode", 3))
    got = tensorkiln.build(model, optimize=False).run({"Q": Q, "K": K, "V": V, "pk": pk, "pv": pv})
    probs = got["qk"][0, 0]
    assert probs.shape == (2, 5)
    assert probs[0, 4] == 0 and probs[0, :4].min() > 0 and probs[1].min() > 0


def test_attention_nonpad_kv_seqlen() -> None:
    Q, K, V = rand(2, 2, 1, 8, seed=1), rand(2, 2, 6, 8, seed=2), rand(2, 2, 6, 8, seed=3)
    lens = np.array([3, 6], np.int64)
    compare("Attention", [("Q", Q), ("K", K), ("V", V), ("m", None), ("pk", None), ("pv", None),
                          ("n", lens)], {"is_causal": 1}, opset=24, oracle="ref")


def test_attention_float16() -> None:
    Q, K, V = (rand(1, 2, 4, 8, seed=s, dtype=np.float16) for s in (1, 2, 3))
    compare("Attention", [("Q", Q), ("K", K), ("V", V)], {"is_causal": 1}, rtol=2e-3, atol=2e-3)


# ---------------------------------------------------------------- RotaryEmbedding

@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rot_dim", [0, 4])
@pytest.mark.parametrize("layout", ["4d", "3d", "4d_no_pos"])
def test_rotary_embedding(interleaved: int, rot_dim: int, layout: str) -> None:
    b, h, s, d = 2, 3, 5, 8
    half = (rot_dim or d) // 2
    attrs: dict[str, Any] = {"interleaved": interleaved, "rotary_embedding_dim": rot_dim}
    if layout == "3d":
        x = rand(b, s, h * d, seed=1)
        attrs["num_heads"] = h
    else:
        x = rand(b, h, s, d, seed=1)
    if layout == "4d_no_pos":
        ang = rand(b, s, half, seed=2)
        ins: Inputs = [("x", x), ("cos", np.cos(ang)), ("sin", np.sin(ang))]
    else:
        ang = rand(16, half, seed=2)
        pos = np.random.default_rng(3).integers(0, 16, (b, s)).astype(np.int64)
        ins = [("x", x), ("cos", np.cos(ang)), ("sin", np.sin(ang)), ("pos", pos)]
    compare("RotaryEmbedding", ins, attrs, oracle="ref", rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- LinearAttention

@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2)], ids=["mha", "gqa"])
@pytest.mark.parametrize("with_past", [False, True])
def test_linear_attention(rule: str, heads: tuple[int, int], with_past: bool) -> None:
    hq, hkv = heads
    b, t, dk, dv = 2, 5, 4, 3
    ins: Inputs = [("q", rand(b, t, hq * dk, seed=1)), ("k", rand(b, t, hkv * dk, seed=2) * 0.5),
                   ("v", rand(b, t, hkv * dv, seed=3)),
                   ("past", rand(b, hkv, dk, dv, seed=4) if with_past else None)]
    ins.append(("decay", -np.abs(rand(b, t, hkv * dk, seed=5))) if "gated" in rule else ("decay", None))
    if "delta" in rule:
        ins.append(("beta", 1 / (1 + np.exp(rand(b, t, hkv, seed=6)))))
    compare("LinearAttention", ins, {"update_rule": rule, "q_num_heads": hq, "kv_num_heads": hkv},
            opset=27, n_out=2, oracle="ref", rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- CausalConvWithState

@pytest.mark.parametrize("activation", ["none", "silu"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_causal_conv_with_state(activation: str, with_bias: bool) -> None:
    x, w = rand(2, 3, 7, seed=1), rand(3, 1, 4, seed=2)
    bias = rand(3, seed=3) if with_bias else None
    compare("CausalConvWithState", [("x", x), ("w", w), ("b", bias), ("s", rand(2, 3, 3, seed=4))],
            {"activation": activation}, opset=27, n_out=2, oracle="ref", rtol=1e-5, atol=1e-6)


def test_causal_conv_state_chains() -> None:
    """Running the sequence in two pieces, carrying the state, equals running it whole."""
    x, w = rand(1, 2, 9, seed=1), rand(2, 1, 3, seed=2)

    def run(xs: np.ndarray, state: np.ndarray | None) -> dict[str, np.ndarray]:
        ins: Inputs = [("x", xs), ("w", w), ("b", None), ("s", state)]
        m = single_node("CausalConvWithState", ins, opset=27, n_out=2)
        return tensorkiln.build(m, optimize=False).run({n: a for n, a in ins if a is not None})

    whole = run(x, None)
    first = run(x[:, :, :4], None)
    second = run(x[:, :, 4:], first["y1"])
    np.testing.assert_allclose(np.concatenate([first["y0"], second["y0"]], 2), whole["y0"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(second["y1"], whole["y1"])
