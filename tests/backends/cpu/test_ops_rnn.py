"""LSTM / GRU / RNN kernels against onnxruntime on random weights."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import tensorkiln
from tensorkiln.backends.cpu import ops_rnn

ort = pytest.importorskip("onnxruntime")

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _model(op: str, *, T: int, B: int, I: int, H: int, direction: str = "forward",  # noqa: E741
           layout: int = 0, seq_lens: bool = False, init: bool = True, peep: bool = False,
           weights_as_inputs: bool = False, opset: int = 14, seed: int = 0,
           **attrs: object) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    nd = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    f32 = np.float32
    tensors = {
        "W": rng.standard_normal((nd, g * H, I)).astype(f32) * 0.5,
        "R": rng.standard_normal((nd, g * H, H)).astype(f32) * 0.5,
        "B": rng.standard_normal((nd, 2 * g * H)).astype(f32) * 0.5,
    }
    feeds = {"X": rng.standard_normal((B, T, I) if layout else (T, B, I)).astype(f32)}
    names = ["X", "W", "R", "B", "", "", "", ""]
    if seq_lens:
        feeds["sl"] = rng.integers(1, T + 1, size=B).astype(np.int32)
        feeds["sl"][0] = T
        names[4] = "sl"
    hshape = (B, nd, H) if layout else (nd, B, H)
    if init:
        feeds["h0"] = rng.standard_normal(hshape).astype(f32)
        names[5] = "h0"
        if op == "LSTM":
            feeds["c0"] = rng.standard_normal(hshape).astype(f32)
            names[6] = "c0"
    if peep:
        tensors["P"] = rng.standard_normal((nd, 3 * H)).astype(f32) * 0.5
        names[7] = "P"
    n_in = 8 if op == "LSTM" else 6
    names = names[:n_in]
    while names[-1] == "":
        names.pop()
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    if opset >= 14:
        attrs["layout"] = layout
    node = helper.make_node(op, names, outs, hidden_size=H, direction=direction, **attrs)
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in feeds.items()]
    inits = []
    for k, v in tensors.items():
        if weights_as_inputs:
            feeds[k] = v
            inputs.append(helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape))
        else:
            inits.append(onnx.numpy_helper.from_array(v, k))
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    graph = helper.make_graph([node], "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model, feeds


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], atol: float = 1e-5,
           ref: list[np.ndarray] | None = None) -> None:
    if ref is None:
        ref = _ort(model, feeds)
    got = tensorkiln.build(model).run(feeds)
    for o, r in zip(model.graph.output, ref):
        np.testing.assert_allclose(got[o.name], r, rtol=1e-4, atol=atol, err_msg=o.name)
        assert got[o.name].dtype == r.dtype


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_vs_ort_seq_lens(op: str, direction: str, layout: int) -> None:
    _check_layout(op, layout, T=5, B=3, I=4, H=6, direction=direction, seq_lens=True)


def _check_layout(op: str, layout: int, **kw: object) -> None:
    """onnxruntime has no layout=1: its reference runs layout=0 on transposed tensors."""
    model0, feeds0 = _model(op, layout=0, **kw)  # type: ignore[arg-type]
    ref = _ort(model0, feeds0)
    if not layout:
        _check(model0, feeds0, ref=ref)
        return
    model1, _ = _model(op, layout=1, **kw)  # type: ignore[arg-type]
    feeds1 = {k: (np.swapaxes(v, 0, 1) if k in ("X", "h0", "c0") else v) for k, v in feeds0.items()}
    ref1 = [np.transpose(ref[0], (2, 0, 1, 3))] + [np.swapaxes(r, 0, 1) for r in ref[1:]]
    _check(model1, feeds1, ref=ref1)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("T", [1, 3, 5])
def test_vs_ort_full_length(op: str, direction: str, T: int) -> None:
    kw = {"linear_before_reset": 1} if op == "GRU" else {}
    _check_layout(op, 1, T=T, B=2, I=3, H=5, direction=direction, **kw)


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_linear_before_reset_weights_as_inputs(lbr: int) -> None:
    model, feeds = _model("GRU", T=4, B=2, I=3, H=5, direction="bidirectional",
                          linear_before_reset=lbr, weights_as_inputs=True, init=False)
    _check(model, feeds)


def test_lstm_peepholes_clip_input_forget() -> None:
    model, feeds = _model("LSTM", T=5, B=3, I=4, H=6, direction="bidirectional", peep=True,
                          seq_lens=True, clip=0.7, input_forget=1)
    _check(model, feeds)


@pytest.mark.parametrize(
    ("op", "acts", "alpha", "beta"),
    [
        ("LSTM", ["HardSigmoid", "LeakyRelu", "Softsign"], [0.3, 0.05], [0.4]),
        ("GRU", ["Sigmoid", "Relu"], [], []),
        ("RNN", ["Relu"], [], []),
        ("RNN", ["ScaledTanh"], [0.8], [1.2]),
    ],
)
def test_activations(op: str, acts: list[str], alpha: list[float], beta: list[float]) -> None:
    kw: dict[str, object] = {"activations": acts}
    if alpha:
        kw["activation_alpha"] = alpha
    if beta:
        kw["activation_beta"] = beta
    model, feeds = _model(op, T=3, B=2, I=3, H=4, **kw)
    _check(model, feeds)


def test_old_opset_without_layout() -> None:
    model, feeds = _model("LSTM", T=3, B=2, I=3, H=4, opset=7, direction="bidirectional")
    _check(model, feeds)


def test_float16() -> None:
    model, feeds = _model("GRU", T=3, B=2, I=3, H=4, init=False, linear_before_reset=1)
    # cast everything to float16
    for t in model.graph.initializer:
        arr = onnx.numpy_helper.to_array(t).astype(np.float16)
        t.CopyFrom(onnx.numpy_helper.from_array(arr, t.name))
    for vi in [*model.graph.input, *model.graph.output]:
        vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    feeds = {"X": feeds["X"].astype(np.float16)}
    _check(model, feeds, atol=3e-3)


def _count_fast(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = ops_rnn._run_fast

    def spy(*a: object, **k: object) -> object:
        calls[0] += 1
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(ops_rnn, "_run_fast", spy)
    return calls


@pytest.mark.parametrize("T", [2, 6])  # fused cells per step / the whole-sequence op
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_fast_path_matches_general(op: str, T: int, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = {"linear_before_reset": 1} if op == "GRU" else {}
    model, feeds = _model(op, T=T, B=3, I=4, H=5, direction="bidirectional", seq_lens=True, **kw)
    feeds["sl"][:] = T  # all full: the fast path
    calls = _count_fast(monkeypatch)
    fast = tensorkiln.build(model).run(feeds)
    assert calls[0] == 1
    # the general path: same numbers with clip far away from any value
    model.graph.node[0].attribute.append(helper.make_attribute("clip", 1e6))
    slow = tensorkiln.build(model).run(feeds)
    assert calls[0] == 1
    for k in fast:
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-5, atol=1e-6)


def test_torch_exported_two_layer_lstm(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)

    class Enc(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(8, 16, 2, batch_first=True)

        def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
            y, (hn, cn) = self.lstm(x, (h, c))
            return y, hn, cn

    m = Enc().eval()
    args = (torch.randn(3, 7, 8), torch.randn(2, 3, 16), torch.randn(2, 3, 16))
    buf = io.BytesIO()
    torch.onnx.export(m, args, buf, input_names=["x", "h", "c"], output_names=["y", "hn", "cn"],
                      opset_version=17, dynamo=False, do_constant_folding=False,
                      dynamic_axes={"x": {0: "b", 1: "t"}, "h": {1: "b"}, "c": {1: "b"}})
    model = onnx.load_model_from_string(buf.getvalue())
    assert sum(n.op_type == "LSTM" for n in model.graph.node) == 2
    feeds = {k: v.numpy() for k, v in zip(["x", "h", "c"], args)}
    calls = _count_fast(monkeypatch)
    try:
        tensorkiln.build(model)
    except tensorkiln.UnsupportedOpError as e:
        if "LSTM" in str(e):
            raise
        pytest.skip(f"ops of other families missing: {e}")
    _check(model, feeds)
    assert calls[0] == 2  # both layers on the fused path
    with torch.no_grad():
        ref = m(*args)
    got = tensorkiln.build(model).run(feeds)
    for name, r in zip(["y", "hn", "cn"], ref):
        np.testing.assert_allclose(got[name], r.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_zero_length_sequence(op: str) -> None:
    model, feeds = _model(op, T=4, B=3, I=3, H=2, seq_lens=True, direction="bidirectional")
    feeds["sl"][:] = [4, 0, 2]  # onnxruntime: zero Y and zero final state for an empty sequence
    _check(model, feeds)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_packed_path_for_ragged_lengths(op: str, direction: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = {"linear_before_reset": 1} if op == "GRU" else {}
    model, feeds = _model(op, T=6, B=4, I=3, H=5, direction=direction, seq_lens=True, **kw)
    feeds["sl"][:] = [6, 2, 5, 1]
    calls = [0]
    real = ops_rnn._run_packed

    def spy(*a: object, **k: object) -> object:
        calls[0] += 1
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(ops_rnn, "_run_packed", spy)
    _check(model, feeds)
    assert calls[0] == 1
    # and the general path agrees
    model.graph.node[0].attribute.append(helper.make_attribute("clip", 1e6))
    fast = tensorkiln.build(_model(op, T=6, B=4, I=3, H=5, direction=direction, seq_lens=True, **kw)[0]).run(feeds)
    slow = tensorkiln.build(model).run(feeds)
    assert calls[0] == 2
    for k in fast:
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-5, atol=1e-6)
