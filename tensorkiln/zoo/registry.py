"""The zoo's models: one registry line each, export to ONNX, a cache, sample inputs."""

from __future__ import annotations

import inspect
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tensorkiln.zoo import bert, residual, rnn, vision

# Bump whenever any network, its weights or the export settings change: cached files of
# another version are never reused.
ZOO_VERSION = 1

Dim = int | str  # a str is a symbolic (dynamic) dimension, e.g. "batch"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "int64"
    shape: tuple[Dim, ...]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    approx_params: int
    task: str  # "classification" | "encoder" | "seq2seq" | "vad"


SampleFn = Callable[..., dict[str, np.ndarray]]  # (batch, rng, **dims) -> feeds


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    build: Callable[[], nn.Module]  # a fresh eval-mode module with the seeded weights
    sample: SampleFn
    trace_dims: dict[str, int] = field(default_factory=dict)  # sizes used for the export


def _image(batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"image": rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)}


def _classifier(name: str, description: str, params: int) -> ModelInfo:
    return ModelInfo(
        name,
        description,
        (TensorSpec("image", "float32", ("batch", 3, 224, 224)),),
        (TensorSpec("logits", "float32", ("batch", 1000)),),
        params,
        "classification",
    )


_BERT = ModelInfo(
    "bert",
    "BERT-base-shaped encoder: 12 layers, hidden 768, 12 heads, GELU, decomposed attention",
    (
        TensorSpec("input_ids", "int64", ("batch", "seq")),
        TensorSpec("attention_mask", "int64", ("batch", "seq")),
    ),
    (TensorSpec("last_hidden_state", "float32", ("batch", "seq", 768)),),
    108_891_648,
    "encoder",
)
_LSTM_NMT = ModelInfo(
    "lstm_nmt",
    "OpenNMT-shaped 2-layer LSTM encoder-decoder, hidden 500, Luong general attention",
    (
        TensorSpec("src", "int64", ("batch", "src_len")),
        TensorSpec("tgt", "int64", ("batch", "tgt_len")),
    ),
    (TensorSpec("logits", "float32", ("batch", "tgt_len", 10000)),),
    23_776_000,
    "seq2seq",
)
_VAD_LSTM = ModelInfo(
    "vad_lstm",
    "voice-activity detector: 512-sample frame -> Conv1d stack -> stateful LSTM(64) -> sigmoid",
    (
        TensorSpec("audio", "float32", ("batch", 512)),
        TensorSpec("h", "float32", (1, "batch", 64)),
        TensorSpec("c", "float32", (1, "batch", 64)),
    ),
    (
        TensorSpec("prob", "float32", ("batch", 1)),
        TensorSpec("hn", "float32", (1, "batch", 64)),
        TensorSpec("cn", "float32", (1, "batch", 64)),
    ),
    57_121,
    "vad",
)

_ALEXNET = _classifier("alexnet", "AlexNet (torchvision shapes)", 61_100_840)
_GOOGLENET = _classifier("googlenet", "GoogLeNet / Inception v1, BatchNorm, no aux heads", 7_005_832)
_RESNET50 = _classifier("resnet50", "ResNet-50 v1.5 with BatchNorm", 25_557_032)
_VGG19 = _classifier("vgg19", "VGG-19 (no BatchNorm)", 143_667_240)
_MOBILENETV2 = _classifier("mobilenetv2", "MobileNetV2 1.0: depthwise convs, ReLU6, BatchNorm", 3_504_872)

_REGISTRY: dict[str, _Entry] = {
    "alexnet": _Entry(_ALEXNET, vision.build_alexnet, _image),
    "googlenet": _Entry(_GOOGLENET, vision.build_googlenet, _image),
    "resnet50": _Entry(_RESNET50, residual.build_resnet50, _image),
    "vgg19": _Entry(_VGG19, vision.build_vgg19, _image),
    "mobilenetv2": _Entry(_MOBILENETV2, residual.build_mobilenetv2, _image),
    "bert": _Entry(_BERT, bert.build_bert, bert.sample_bert, {"seq": 16}),
    "lstm_nmt": _Entry(_LSTM_NMT, rnn.build_lstm_nmt, rnn.sample_lstm_nmt, {"src_len": 7, "tgt_len": 5}),
    "vad_lstm": _Entry(_VAD_LSTM, rnn.build_vad_lstm, rnn.sample_vad_lstm),
}


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        from tensorkiln.errors import UserError

        raise UserError(f"unknown zoo model {name!r}; known models: {', '.join(_REGISTRY)}") from None


def list_models() -> list[ModelInfo]:
    """All zoo models, in registry order."""
    return [e.info for e in _REGISTRY.values()]


def info(name: str) -> ModelInfo:
    return _entry(name).info


def module(name: str) -> nn.Module:
    """A fresh eval-mode PyTorch module of the model, with its fixed-seed random weights."""
    return _entry(name).build()


def sample_inputs(name: str, batch: int = 1, seed: int = 0, **dims: int) -> dict[str, np.ndarray]:
    """Random inputs of the right names, dtypes and shapes (feed order = ``info(name).inputs``).

    ``dims`` sets a model's symbolic sizes: ``seq`` for bert (default 128), ``src_len`` and
    ``tgt_len`` for lstm_nmt (defaults 20 and 18).
    """
    entry = _entry(name)
    allowed = [p for p in inspect.signature(entry.sample).parameters if p not in ("batch", "rng")]
    bad = [k for k in dims if k not in allowed]
    sizes = {"batch": batch, **dims}
    bad += [
        f"{k}={v!r}"
        for k, v in sizes.items()
        if isinstance(v, bool) or not (isinstance(v, (int, np.integer)) and v >= 1)
    ]
    if bad:
        from tensorkiln.errors import UserError

        raise UserError(
            f"zoo model {name!r}: bad sizes {bad}; it takes batch and {allowed or 'nothing else'} as positive integers"
        )
    return entry.sample(int(batch), np.random.default_rng(seed), **{k: int(v) for k, v in dims.items()})


def cache_dir() -> Path:
    """``$TENSORKILN_CACHE/zoo``, by default ``~/.cache/tensorkiln/zoo``."""
    base = os.environ.get("TENSORKILN_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "tensorkiln"
    return root / "zoo"


def _dynamic_axes(specs: tuple[TensorSpec, ...]) -> dict[str, dict[int, str]]:
    return {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in specs}


def export(name: str, path: str | os.PathLike[str], *, opset: int = 17) -> Path:
    """Build the model and export it to ONNX at ``path`` (written atomically); returns it.

    Exported with the TorchScript exporter and ``do_constant_folding=False``, so
    BatchNormalization nodes stay in the graph; batch (and sequence) axes are dynamic.
    """
    return _export_module(name, _entry(name).build(), path, opset=opset)


def _export_module(name: str, model: nn.Module, path: str | os.PathLike[str], *, opset: int = 17) -> Path:
    """``export`` of an already built ``module(name)`` (saves building it twice in tests)."""
    entry = _entry(name)
    feeds = sample_inputs(name, batch=2, seed=0, **entry.trace_dims)
    spec_in, spec_out = entry.info.inputs, entry.info.outputs
    args = tuple(torch.from_numpy(feeds[s.name]) for s in spec_in)
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer / LSTM-batch_first chatter
            torch.onnx.export(
                model.eval(),
                args,
                str(tmp),
                dynamo=False,
                opset_version=opset,
                do_constant_folding=False,
                input_names=[s.name for s in spec_in],
                output_names=[s.name for s in spec_out],
                dynamic_axes=_dynamic_axes(spec_in + spec_out),
            )
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def cached_path(name: str) -> Path:
    """Where ``get`` keeps the model's export (it may not exist yet)."""
    _entry(name)
    return cache_dir() / f"{name}-v{ZOO_VERSION}.onnx"


def get(name: str) -> Path:
    """The cached ONNX export of ``name``, exported on first use."""
    path = cached_path(name)
    if path.is_file():
        return path
    return export(name, path)
