"""The model zoo: registry, sample inputs, cache, and each export against PyTorch via ORT.

The cheap models are exported into a temporary cache (``TENSORKILN_CACHE`` patched); the
large ones (vgg19, bert) are marked slow and use the real cache, so they are exported
once per machine.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from tensorkiln import zoo
from tensorkiln.errors import UserError
from tensorkiln.zoo import registry

ort = pytest.importorskip("onnxruntime")

NAMES = ["alexnet", "googlenet", "resnet50", "vgg19", "mobilenetv2", "bert", "lstm_nmt", "vad_lstm"]
SLOW = {"vgg19", "bert"}
PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES]


def check_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    assert np.isfinite(got).all(), f"{what}: not finite"
    scale = float(np.abs(want).max())
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= 1e-3 * scale, f"{what}: max abs err {err:.3g} > 1e-3 * {scale:.3g}"


def check_alive(out: np.ndarray, batch_axis: int, what: str) -> None:
    """Finite, not constant, and (at batch > 1) different rows for different inputs."""
    assert np.isfinite(out).all(), f"{what}: not finite"
    if out.size > 1:
        assert out.std() > 1e-4 * np.abs(out).max() > 0, f"{what}: constant"
    rows = np.moveaxis(out, batch_axis, 0)
    if len(rows) > 1:
        assert np.abs(rows[0] - rows[-1]).max() > 1e-4 * np.abs(out).max(), f"{what}: same rows"


def torch_run(model: torch.nn.Module, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    args = [torch.from_numpy(feeds[s.name]) for s in zoo.info(name).inputs]
    with torch.no_grad():
        out = model(*args)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def session(path: Path) -> Any:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclasses.dataclass
class Built:
    path: Path
    model: torch.nn.Module
    sess: Any


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Built]]:
    """name -> its export, PyTorch module and ORT session, each made once per test module."""
    cache = tmp_path_factory.mktemp("zoo-cache")
    memo: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in memo:
            model = zoo.module(name)
            if name in SLOW:
                path = zoo.get(name)
            else:
                with pytest.MonkeyPatch.context() as mp:
                    mp.setenv("TENSORKILN_CACHE", str(cache))
                    path = registry._export_module(name, model, zoo.cached_path(name))
                    assert path == cache / "zoo" / f"{name}-v{zoo.ZOO_VERSION}.onnx"
                    assert zoo.get(name) == path  # a cache hit
            memo[name] = Built(path, model, session(path))
        return memo[name]

    yield get
    memo.clear()


# ---------------------------------------------------------------- registry, inputs, cache


def test_list_models() -> None:
    infos = zoo.list_models()
    assert [i.name for i in infos] == NAMES
    assert {i.task for i in infos} == {"classification", "encoder", "seq2seq", "vad"}
    for i in infos:
        assert i.approx_params > 0 and i.description and i.inputs and i.outputs
        for spec in i.inputs + i.outputs:
            assert spec.dtype in ("float32", "int64")
            assert "batch" in spec.shape
    with pytest.raises(dataclasses.FrozenInstanceError):
        infos[0].name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("call", [zoo.get, zoo.sample_inputs, zoo.module, zoo.info])
def test_unknown_name(call: Callable[[str], Any]) -> None:
    with pytest.raises(UserError, match="resnet50") as e:
        call("resnet51")
    assert "unknown zoo model 'resnet51'" in str(e.value)


def test_unknown_name_export(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="known models: alexnet, googlenet"):
        zoo.export("nope", tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 3])
def test_sample_inputs_match_spec(name: str, batch: int) -> None:
    feeds = zoo.sample_inputs(name, batch=batch)
    specs = zoo.info(name).inputs
    assert list(feeds) == [s.name for s in specs]
    for s in specs:
        arr = feeds[s.name]
        assert arr.dtype == np.dtype(s.dtype)
        assert arr.shape[s.shape.index("batch")] == batch
        for dim, size in zip(s.shape, arr.shape):
            assert isinstance(dim, str) or dim == size
    again = zoo.sample_inputs(name, batch=batch)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)  # seeded


def test_sample_inputs_dims() -> None:
    f = zoo.sample_inputs("bert", batch=4, seed=3)
    assert f["input_ids"].shape == (4, 128) and f["attention_mask"].shape == (4, 128)
    assert f["input_ids"].min() >= 0 and f["input_ids"].max() < 30522
    assert f["attention_mask"][0].all() and not f["attention_mask"][3].all()
    assert (np.diff(f["attention_mask"], axis=1) <= 0).all()  # zeros only at the end
    assert zoo.sample_inputs("bert", seq=7)["input_ids"].shape == (1, 7)

    f = zoo.sample_inputs("lstm_nmt", batch=2)
    assert f["src"].shape == (2, 20) and f["tgt"].shape == (2, 18)
    assert f["src"].max() < 10000 and f["tgt"].max() < 10000
    f = zoo.sample_inputs("lstm_nmt", src_len=5, tgt_len=3)
    assert f["src"].shape == (1, 5) and f["tgt"].shape == (1, 3)

    f = zoo.sample_inputs("vad_lstm", batch=2)
    assert not f["h"].any() and not f["c"].any() and f["audio"].std() > 0

    for name, dims in [("resnet50", {"seq": 3}), ("bert", {"seq": 0}), ("bert", {"seq": 513}),
                       ("lstm_nmt", {"src_len": -1}), ("vad_lstm", {"batch": 0})]:  # fmt: skip
        with pytest.raises(UserError):
            zoo.sample_inputs(name, **dims)


def test_get_uses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORKILN_CACHE", str(tmp_path))
    path = zoo.get("vad_lstm")
    assert path == tmp_path / "zoo" / f"vad_lstm-v{zoo.ZOO_VERSION}.onnx"
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == [path.name]
    monkeypatch.setattr(registry, "_export_module", lambda *a, **k: pytest.fail("re-export"))
    assert zoo.get("vad_lstm") == path


def test_export_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        Path(args[2]).write_bytes(b"half a file")
        raise RuntimeError("boom")

    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(RuntimeError, match="boom"):
        zoo.export("vad_lstm", tmp_path / "v.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["mobilenetv2", "vad_lstm"])
def test_weights_are_seeded(name: str) -> None:
    torch.manual_seed(123)  # the global RNG must not matter
    a = zoo.module(name).state_dict()
    torch.manual_seed(456)
    b = zoo.module(name).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", PARAMS)
def test_approx_params(name: str, built: Callable[[str], Built]) -> None:
    model = built(name).model
    assert sum(p.numel() for p in model.parameters()) == zoo.info(name).approx_params


# ---------------------------------------------------------------- exports


def _dims(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    return tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)


@pytest.mark.parametrize("name", PARAMS)
def test_export_is_valid_onnx(name: str, built: Callable[[str], Built]) -> None:
    path = built(name).path
    onnx.checker.check_model(str(path))
    model = onnx.load(str(path), load_external_data=False)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    info = zoo.info(name)
    for specs, values in [(info.inputs, model.graph.input), (info.outputs, model.graph.output)]:
        got = [(v.name, _dims(v)) for v in values]
        assert got == [(s.name, s.shape) for s in specs]

    ops = Counter(n.op_type for n in model.graph.node)
    expected_ops = {
        "alexnet": {"Conv": 5, "MaxPool": 3, "Gemm": 3},
        "googlenet": {"Conv": 57, "BatchNormalization": 57, "Concat": 9},
        "resnet50": {"Conv": 53, "BatchNormalization": 53, "Add": 16},
        "vgg19": {"Conv": 16, "MaxPool": 5, "Gemm": 3},
        "mobilenetv2": {"Conv": 52, "BatchNormalization": 52, "Clip": 35},
        "bert": {"Softmax": 12, "Erf": 12, "LayerNormalization": 25, "MatMul": 96},
        "lstm_nmt": {"LSTM": 4, "Softmax": 1, "Tanh": 1},
        "vad_lstm": {"LSTM": 1, "Conv": 3, "Sigmoid": 1},
    }[name]
    assert {op: ops[op] for op in expected_ops} == expected_ops
    if name == "mobilenetv2":
        groups = [a.i for n in model.graph.node for a in n.attribute if a.name == "group"]
        assert sum(g > 1 for g in groups) == 17  # the depthwise convolutions
    if name == "bert":
        assert "Attention" not in ops and "Gelu" not in ops  # the decomposed forms


@pytest.mark.parametrize("name", PARAMS)
def test_onnxruntime_matches_torch(name: str, built: Callable[[str], Built]) -> None:
    b = built(name)
    info = zoo.info(name)
    for batch in (1, 4):
        feeds = zoo.sample_inputs(name, batch=batch, seed=batch)
        got = b.sess.run([s.name for s in info.outputs], feeds)
        want = torch_run(b.model, name, feeds)
        for spec, g, w in zip(info.outputs, got, want):
            what = f"{name} {spec.name} batch {batch}"
            check_close(g, w, what)
            check_alive(g, spec.shape.index("batch"), what)


def test_vad_lstm_state_feedback(built: Callable[[str], Built]) -> None:
    b = built("vad_lstm")
    feeds = zoo.sample_inputs("vad_lstm", batch=4)
    prob0, hn, cn = b.sess.run(["prob", "hn", "cn"], feeds)
    second = {**feeds, "h": hn, "c": cn}
    got = b.sess.run(["prob", "hn", "cn"], second)
    for g, w in zip(got, torch_run(b.model, "vad_lstm", second)):
        check_close(g, w, "vad_lstm step 2")
    assert np.abs(got[0] - prob0).max() > 1e-4  # the state matters


def test_lstm_nmt_lengths(built: Callable[[str], Built]) -> None:
    """Sequence lengths other than the traced 7/5, including 1."""
    b = built("lstm_nmt")
    for src_len, tgt_len in [(1, 1), (33, 9)]:
        feeds = zoo.sample_inputs("lstm_nmt", batch=2, src_len=src_len, tgt_len=tgt_len)
        (got,) = b.sess.run(["logits"], feeds)
        check_close(got, torch_run(b.model, "lstm_nmt", feeds)[0], f"{src_len}/{tgt_len}")


@pytest.mark.slow
def test_bert_lengths(built: Callable[[str], Built]) -> None:
    b = built("bert")
    for seq in (1, 384):
        feeds = zoo.sample_inputs("bert", batch=2, seq=seq)
        (got,) = b.sess.run(["last_hidden_state"], feeds)
        check_close(got, torch_run(b.model, "bert", feeds)[0], f"bert seq {seq}")
