"""Helpers shared by CLI commands: loading a model or engine, making inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tensorkiln.engine import Engine, TensorSpec, build, load_engine
from tensorkiln.engine.fileformat import is_engine_file
from tensorkiln.errors import FeedError, OptionError
from tensorkiln.ir import DType


def open_engine(path: str, **options: Any) -> Engine:
    """Load an engine file, or build an engine from an ONNX model."""
    if is_engine_file(path):
        if options:
            raise OptionError(f"{path!r} is an engine already; build options {sorted(options)} do not apply")
        return load_engine(path)
    return build(path, **options)


def parse_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``name:1x3x224x224`` (repeatable, or comma separated) → {name: shape}."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, dims = part.rpartition(":")
            if not sep or not name:
                raise OptionError(f"--shapes expects NAME:D1xD2x..., got {part!r}")
            try:
                shape = tuple(int(d) for d in dims.lower().split("x")) if dims else ()
            except ValueError:
                raise OptionError(f"--shapes {part!r}: dims must be integers separated by 'x'") from None
            if any(d < 0 for d in shape):
                raise OptionError(f"--shapes {part!r}: dims must be >= 0")
            out[name] = shape
    return out


def resolve_shape(spec: TensorSpec, shapes: dict[str, tuple[int, ...]],
                  dims: dict[str, int]) -> tuple[int, ...]:
    if spec.name in shapes:
        return shapes[spec.name]
    if spec.shape is None:
        raise OptionError(f"input {spec.name!r} has an unknown shape; give it with --shapes {spec.name}:...")
    out = []
    for d in spec.shape:
        if isinstance(d, int):
            out.append(d)
        elif isinstance(d, str) and d in dims:
            out.append(dims[d])
        else:
            out.append(1)  # symbolic dims default to 1 (say so via --shapes)
    return tuple(out)


def random_inputs(engine: Engine, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    unknown = [n for n in shapes if n not in {s.name for s in engine.inputs}]
    if unknown:
        raise OptionError(
            f"--shapes names unknown input(s) {unknown}; inputs are {[s.name for s in engine.inputs]}"
        )
    # bind symbolic dims from any explicit shape so related inputs agree
    dims: dict[str, int] = {}
    for s in engine.inputs:
        if s.name in shapes and s.shape is not None and len(s.shape) == len(shapes[s.name]):
            for d, n in zip(s.shape, shapes[s.name]):
                if isinstance(d, str):
                    dims.setdefault(d, n)
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for s in engine.inputs:
        shape = resolve_shape(s, shapes, dims)
        dt = DType.from_name(s.dtype) if s.dtype else DType.FLOAT32
        np_dt = dt.to_numpy()
        if dt.is_float:
            arr = rng.standard_normal(shape).astype(np_dt)
        elif dt == DType.BOOL:
            arr = rng.integers(0, 2, shape).astype(bool)
        else:
            # small non-negative ints are valid indices/ids for most models
            arr = rng.integers(0, 2 if "mask" in s.name.lower() else 100, shape).astype(np_dt)
            if "mask" in s.name.lower():
                arr[...] = 1
        feeds[s.name] = arr
    return feeds


def load_npz(path: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise FeedError(f"inputs file {path!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as z:  # never unpickle user files
            return {k: z[k] for k in z.files}
    except ValueError as e:
        raise FeedError(f"{path!r}: cannot read arrays ({e}); expected an .npz written by np.savez") from None
    except OSError as e:
        raise FeedError(f"{path!r} is not a readable .npz file: {e}") from None
