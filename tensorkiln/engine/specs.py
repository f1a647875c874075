"""Input/output descriptions and feed validation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tensorkiln.errors import FeedError
from tensorkiln.ir import DType, Value


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of an engine input or output (dims may be symbolic)."""

    name: str
    dtype: str | None
    shape: tuple[int | str | None, ...] | None

    @staticmethod
    def of(v: Value) -> TensorSpec:
        return TensorSpec(v.name, v.dtype.short if v.dtype else None, v.shape)

    def __str__(self) -> str:
        dims = "?" if self.shape is None else "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype or '?'}[{dims}]"


def to_tensor(name: str, x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.device.type != "cpu":
            raise FeedError(f"input {name!r} is on {x.device}; the CPU engine needs CPU tensors")
        return x.detach() if x.requires_grad else x
    if not isinstance(x, np.ndarray):
        if hasattr(x, "__dlpack__"):
            try:
                return torch.from_dlpack(x)
            except Exception:
                pass
        try:
            x = np.asarray(x)
        except Exception as e:
            raise FeedError(f"input {name!r}: cannot convert {type(x).__name__} to an array: {e}") from None
    if x.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: same bits as torch.bfloat16
        return torch.from_numpy(np.require(x, requirements="C").view(np.int16)).view(torch.bfloat16)
    if x.dtype == object or x.dtype.kind in "USV":
        raise FeedError(f"input {name!r}: got a {x.dtype} array; string/object tensors are not supported")
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    if not x.flags.writeable:
        x = x.copy()
    try:
        return torch.from_numpy(x)
    except TypeError as e:
        raise FeedError(f"input {name!r}: dtype {x.dtype} is not supported: {e}") from None


def check_feeds(
    specs: list[TensorSpec], feeds: Mapping[str, Any]
) -> list[torch.Tensor]:
    """Validate ``feeds`` against ``specs`` and return tensors in input order."""
    if not isinstance(feeds, Mapping):
        raise FeedError(
            f"feeds must be a mapping of input name to array, got {type(feeds).__name__}; "
            f"expected inputs: {', '.join(str(s) for s in specs)}"
        )
    names = {s.name for s in specs}
    unknown = [k for k in feeds if k not in names]
    if unknown:
        raise FeedError(
            f"unknown input name(s) {unknown}; the engine's inputs are: "
            + ", ".join(str(s) for s in specs)
        )
    missing = [s.name for s in specs if s.name not in feeds]
    if missing:
        raise FeedError(
            f"missing input(s) {missing}; the engine's inputs are: " + ", ".join(str(s) for s in specs)
        )
    out: list[torch.Tensor] = []
    bound: dict[str, tuple[int, str]] = {}
    for s in specs:
        t = to_tensor(s.name, feeds[s.name])
        if s.dtype is not None:
            want = DType.from_name(s.dtype).to_torch()
            if t.dtype != want:
                got = str(t.dtype).replace("torch.", "")
                raise FeedError(
                    f"input {s.name!r} expects dtype {s.dtype}, got {got}; "
                    f"convert it first (e.g. arr.astype(np.{s.dtype}))"
                )
        if s.shape is not None:
            if t.dim() != len(s.shape):
                raise FeedError(
                    f"input {s.name!r} expects rank {len(s.shape)} (shape {_fmt(s.shape)}), "
                    f"got rank {t.dim()} (shape {_fmt(tuple(t.shape))})"
                )
            for axis, (d, n) in enumerate(zip(s.shape, t.shape)):
                if isinstance(d, int) and d != n:
                    raise FeedError(
                        f"input {s.name!r} expects size {d} on axis {axis} (shape {_fmt(s.shape)}), "
                        f"got {n} (shape {_fmt(tuple(t.shape))})"
                    )
                if isinstance(d, str):
                    if d in bound and bound[d][0] != n:
                        first = bound[d][1]
                        raise FeedError(
                            f"dimension {d!r} is {bound[d][0]} in input {first!r} but {n} in "
                            f"input {s.name!r} (axis {axis}); inputs sharing a symbolic dim "
                            "must agree"
                        )
                    bound.setdefault(d, (int(n), s.name))
        out.append(t)
    return out


def _fmt(shape: tuple[Any, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


class FeedChecker:
    """``check_feeds`` with everything that depends only on the specs computed once.

    The common case — numpy arrays or torch tensors of the right dtype and sizes — takes a
    short path; anything unusual goes through ``check_feeds`` for the full checks and the
    detailed error messages.
    """

    def __init__(self, specs: list[TensorSpec]) -> None:
        self.specs = specs
        self.names = [s.name for s in specs]
        self._np: list[Any] = []
        self._torch: list[Any] = []
        self._static: list[list[tuple[int, int]] | None] = []
        self._symbolic = False
        for s in specs:
            dt = DType.from_name(s.dtype) if s.dtype else None
            self._np.append(dt.to_numpy() if dt is not None and dt != DType.BFLOAT16 else None)
            self._torch.append(dt.to_torch() if dt is not None else None)
            if s.shape is None:
                self._static.append(None)
            else:
                self._static.append([(i, d) for i, d in enumerate(s.shape) if isinstance(d, int)])
                self._symbolic |= any(isinstance(d, str) for d in s.shape)
        self._ranks = [None if s.shape is None else len(s.shape) for s in specs]

    def __call__(self, feeds: Mapping[str, Any]) -> list[torch.Tensor]:
        if self._symbolic or type(feeds) is not dict or len(feeds) != len(self.names):
            return check_feeds(self.specs, feeds)
        out: list[torch.Tensor] = []
        from_numpy = torch.from_numpy
        for k, name in enumerate(self.names):
            x = feeds.get(name)
            if type(x) is np.ndarray:
                if x.dtype != self._np[k] or not x.flags.writeable or not x.dtype.isnative:
                    return check_feeds(self.specs, feeds)
                t = from_numpy(x)
            elif type(x) is torch.Tensor and x.dtype == self._torch[k] and x.device.type == "cpu" \
                    and not x.requires_grad:
                t = x
            else:
                return check_feeds(self.specs, feeds)
            static = self._static[k]
            if static is not None:
                if t.dim() != self._ranks[k]:
                    return check_feeds(self.specs, feeds)
                shape = t.shape
                for i, d in static:
                    if shape[i] != d:
                        return check_feeds(self.specs, feeds)
            out.append(t)
        return out
