"""Which model is benchmarked, and its inputs at a given batch size.

The batch is the model's first symbolic dimension (the first one met walking the inputs in
order); every input dimension with that name takes the batch size. Zoo models get
``zoo.sample_inputs`` (valid token ids for the translators, images for classifiers); other
models get random Gaussian floats / small non-negative integers of the right dtype and shape.
Real inputs (an .npz) are tiled or cut along the batch axis to the batch size asked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tensorkiln import zoo
from tensorkiln.engine import Engine, TensorSpec, build
from tensorkiln.engine.fileformat import is_engine_file, load_engine, read_header
from tensorkiln.errors import FeedError, OptionError
from tensorkiln.ir import DType


@dataclass
class ModelRef:
    """What the user named: an ONNX file, an engine file, or a zoo model."""

    arg: str
    path: Path
    is_engine: bool
    zoo_name: str | None = None
    onnx_path: Path | None = None  # the ONNX file peers run (None for an engine built elsewhere)
    zoo_dims: dict[str, int] = field(default_factory=dict)

    def open(self, **options: Any) -> Engine:
        if self.is_engine:
            unknown = set(options) - {"threads", "streams"}
            if unknown:
                raise OptionError(f"{self.arg!r} is an engine already; build options {sorted(unknown)} do not apply")
            return load_engine(self.path, **options)
        return build(str(self.path), **options)


def resolve_model(arg: str) -> ModelRef:
    """A path to .onnx / engine file, or a zoo model name (``resnet50`` or ``zoo:resnet50``)."""
    name = arg[4:] if arg.startswith("zoo:") else arg
    p = Path(arg)
    if not p.exists():
        if name in {m.name for m in zoo.list_models()}:
            path = zoo.get(name)
            return ModelRef(arg, path, False, name, path)
        raise OptionError(f"{arg!r} is neither a file nor a zoo model; zoo models: "
                          f"{', '.join(m.name for m in zoo.list_models())}")
    if is_engine_file(p):
        src = _engine_source(p)
        zname = _zoo_name_of(Path(src)) if src else None
        onnx_path = Path(src) if src and Path(src).is_file() else None
        return ModelRef(arg, p, True, zname, onnx_path)
    return ModelRef(arg, p, False, _zoo_name_of(p), p)


def _engine_source(p: Path) -> str | None:
    """The ONNX path an engine file was built from (its header only; no weights are unpacked)."""
    try:
        header, _ = read_header(p.read_bytes(), repr(str(p)))
        return str((header.get("source") or {}).get("model") or "") or None
    except Exception:
        return None


def _zoo_name_of(p: Path) -> str | None:
    try:
        rp = p.resolve()
    except OSError:
        return None
    for m in zoo.list_models():
        try:
            if zoo.cached_path(m.name).resolve() == rp:
                return m.name
        except OSError:
            continue
    return None


def batch_dim(inputs: list[TensorSpec]) -> str | None:
    """The model's batch dimension: its first symbolic dimension, None for a static model."""
    for s in inputs:
        for d in s.shape or ():
            if isinstance(d, str):
                return d
    return None


def static_batch(inputs: list[TensorSpec]) -> int:
    """Batch of a model without a symbolic dimension: dim 0 of its first input (1 if scalar)."""
    for s in inputs:
        if s.shape:
            d = s.shape[0]
            return d if isinstance(d, int) else 1
    return 1


def make_feeds(engine: Engine | list[TensorSpec], ref: ModelRef | None, batch: int, *, seed: int = 0,
               shapes: Mapping[str, tuple[int, ...]] | None = None,
               real: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Inputs for ``engine`` (or its input specs) at ``batch``: real ones resized, zoo samples, or random."""
    specs = engine if isinstance(engine, list) else engine.inputs
    bdim = batch_dim(specs)
    if bdim is None and batch != static_batch(specs):
        raise OptionError(f"the model has no symbolic (batch) dimension; it only runs at batch "
                          f"{static_batch(specs)}, not {batch}")
    if real is not None:
        return {s.name: _resize_batch(s, np.asarray(real[s.name]), bdim, batch) if s.name in real
                else _missing(s.name, real) for s in specs}
    if ref is not None and ref.zoo_name and not shapes:
        return zoo.sample_inputs(ref.zoo_name, batch=batch, seed=seed, **ref.zoo_dims)
    return random_feeds(specs, batch, bdim, seed=seed, shapes=shapes or {})


def onnx_input_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    """The graph inputs of an ONNX model (initializers excluded), symbolic dims as names."""
    inits = {t.name for t in model.graph.initializer}
    out = []
    for v in model.graph.input:
        if v.name in inits or not v.type.HasField("tensor_type"):
            continue
        t = v.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else None
        shape: tuple[int | str | None, ...] | None = None
        if t.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        out.append(TensorSpec(v.name, dtype, shape))
    return out


def _missing(name: str, real: Mapping[str, np.ndarray]) -> np.ndarray:
    raise FeedError(f"the inputs file has no array {name!r}; it has {sorted(real)}")


def _resize_batch(spec: TensorSpec, arr: np.ndarray, bdim: str | None, batch: int) -> np.ndarray:
    if bdim is None or not spec.shape or bdim not in spec.shape:
        return arr
    ax = list(spec.shape).index(bdim)
    if arr.ndim <= ax or arr.shape[ax] == batch:
        return arr
    reps = -(-batch // max(1, arr.shape[ax]))
    tiled = np.concatenate([arr] * reps, axis=ax) if reps > 1 else arr
    return np.ascontiguousarray(np.take(tiled, np.arange(batch), axis=ax))


def random_feeds(specs: list[TensorSpec], batch: int, bdim: str | None, *, seed: int = 0,
                 shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """Gaussian floats / small ints; symbolic dims other than the batch default to 1."""
    rng = np.random.default_rng(seed)
    shapes = shapes or {}
    unknown = [n for n in shapes if n not in {s.name for s in specs}]
    if unknown:
        raise OptionError(f"--shapes names unknown input(s) {unknown}; inputs are {[s.name for s in specs]}")
    dims: dict[str, int] = {}
    for s in specs:  # bind symbolic dims from explicit shapes so related inputs agree
        if s.name in shapes and s.shape is not None and len(s.shape) == len(shapes[s.name]):
            for d, n in zip(s.shape, shapes[s.name]):
                if isinstance(d, str) and d != bdim:
                    dims.setdefault(d, n)
    if bdim is not None:
        dims[bdim] = batch
    out: dict[str, np.ndarray] = {}
    for s in specs:
        if s.shape is None and s.name not in shapes:
            raise OptionError(f"input {s.name!r} has an unknown shape; give it with --shapes {s.name}:...")
        if s.name in shapes:
            shape = list(shapes[s.name])
            if s.shape is not None and bdim in s.shape and len(shape) == len(s.shape):
                shape[list(s.shape).index(bdim)] = batch
        else:
            assert s.shape is not None
            shape = [d if isinstance(d, int) else dims.get(d, 1) if isinstance(d, str) else 1 for d in s.shape]
        dt = DType.from_name(s.dtype) if s.dtype else DType.FLOAT32
        if dt.is_float:
            arr = rng.standard_normal(shape).astype(dt.to_numpy())
        elif dt == DType.BOOL:
            arr = rng.integers(0, 2, shape).astype(bool)
        elif "mask" in s.name.lower():
            arr = np.ones(shape, dt.to_numpy())
        else:
            arr = rng.integers(0, 100, shape).astype(dt.to_numpy())
        out[s.name] = arr
    return out


def batch_of(feeds: Mapping[str, np.ndarray], engine: Engine) -> int:
    """The batch size of ``feeds`` (size of the batch dimension in the first input having it)."""
    bdim = batch_dim(engine.inputs)
    if bdim is None:
        return static_batch(engine.inputs)
    for s in engine.inputs:
        if s.shape and bdim in s.shape and s.name in feeds:
            return int(np.shape(feeds[s.name])[list(s.shape).index(bdim)])
    return 1


def describe(ref: ModelRef) -> str:
    what = f"zoo:{ref.zoo_name}" if ref.zoo_name else os.fspath(ref.path)
    return what + (" (engine)" if ref.is_engine else "")
