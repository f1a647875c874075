"""CPU kernels: random generators (RandomNormal/Uniform[Like], Bernoulli, Multinomial).

With a ``seed`` attribute a node owns a ``torch.Generator`` seeded once when the engine
is built, so a fresh engine gives the same sequence of draws (as onnxruntime does per
session); without one it draws from torch's global generator. Values are drawn in
float32 (float64 when asked for) and cast to the requested type.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from tensorkiln.backends.cpu.base import (
    BuildContext,
    Factory,
    Kernel,
    attr,
    bad_model,
    torch_dtype,
    unsupported,
)
from tensorkiln.ir import Node

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class _Rng:
    """A per-node generator (seeded) or the global one; draws are serialized per node."""

    def __init__(self, node: Node) -> None:
        seed = attr(node, "seed")
        self.gen: torch.Generator | None = None
        self.lock = threading.Lock()
        if seed is not None:
            self.gen = torch.Generator()
            self.gen.manual_seed(int(float(seed) * 1000003) & 0x7FFFFFFFFFFFFFFF)

    def draw(self, fn: Callable[[torch.Generator | None], torch.Tensor]) -> torch.Tensor:
        if self.gen is None:
            return fn(None)
        with self.lock:
            return fn(self.gen)


def _out_dtype(node: Node, default: torch.dtype | None, allowed: tuple[torch.dtype, ...]) -> torch.dtype | None:
    code = attr(node, "dtype")
    if code is None:
        return default
    dt = torch_dtype(int(code))
    if dt not in allowed:
        raise unsupported(node, f"output dtype {dt}")
    return dt


def _work(dt: torch.dtype) -> torch.dtype:
    return torch.float64 if dt == torch.float64 else torch.float32


def _shape(node: Node) -> list[int]:
    shape = attr(node, "shape")
    if shape is None:
        raise bad_model(node, "missing attribute 'shape'")
    return [int(s) for s in shape]


def _normal_sampler(node: Node) -> Callable[[list[int], torch.dtype], torch.Tensor]:
    mean = float(attr(node, "mean", 0.0))
    scale = float(attr(node, "scale", 1.0))
    rng = _Rng(node)

    def sample(shape: list[int], dt: torch.dtype) -> torch.Tensor:
        w = _work(dt)
        t = rng.draw(lambda g: torch.randn(shape, dtype=w, generator=g))
        return (t * scale + mean).to(dt)

    return sample


def _uniform_sampler(node: Node) -> Callable[[list[int], torch.dtype], torch.Tensor]:
    low = float(attr(node, "low", 0.0))
    high = float(attr(node, "high", 1.0))
    rng = _Rng(node)

    def sample(shape: list[int], dt: torch.dtype) -> torch.Tensor:
        w = _work(dt)
        t = rng.draw(lambda g: torch.rand(shape, dtype=w, generator=g))
        return (t * (high - low) + low).to(dt)

    return sample


def _random(sampler: Callable[[Node], Callable[[list[int], torch.dtype], torch.Tensor]]) -> Factory:
    def factory(node: Node, ctx: BuildContext) -> Kernel:
        shape = _shape(node)
        dt = _out_dtype(node, torch.float32, _FLOATS)
        assert dt is not None
        sample = sampler(node)

        def kernel() -> torch.Tensor:
            return sample(shape, dt)

        return kernel

    return factory


def _random_like(sampler: Callable[[Node], Callable[[list[int], torch.dtype], torch.Tensor]]) -> Factory:
    def factory(node: Node, ctx: BuildContext) -> Kernel:
        dt = _out_dtype(node, None, _FLOATS)
        sample = sampler(node)

        def kernel(x: torch.Tensor) -> torch.Tensor:
            odt = dt if dt is not None else x.dtype
            if odt not in _FLOATS:
                raise TypeError(f"cannot draw random values of type {odt}; give the dtype attribute")
            return sample(list(x.shape), odt)

        return kernel

    return factory


_ANY_OUT = (*_FLOATS, torch.bool, torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _bernoulli(node: Node, ctx: BuildContext) -> Kernel:
    dt = _out_dtype(node, None, _ANY_OUT)
    rng = _Rng(node)

    def kernel(p: torch.Tensor) -> Any:
        w = _work(p.dtype)
        pw = p.to(w)
        t = rng.draw(lambda g: torch.bernoulli(pw, generator=g))
        return t.to(dt if dt is not None else p.dtype)

    return kernel


def _multinomial(node: Node, ctx: BuildContext) -> Kernel:
    dt = _out_dtype(node, torch.int32, (torch.int32, torch.int64))
    assert dt is not None
    n = int(attr(node, "sample_size", 1))
    rng = _Rng(node)

    def kernel(x: torch.Tensor) -> Any:
        if x.dim() != 2:
            raise ValueError(f"Multinomial input must be [batch, classes], got {tuple(x.shape)}")
        probs = torch.softmax(x.to(torch.float64), dim=-1)
        t = rng.draw(lambda g: torch.multinomial(probs, n, replacement=True, generator=g))
        return t.to(dt)

    return kernel


KERNELS: dict[str, Factory] = {
    "RandomNormal": _random(_normal_sampler),
    "RandomNormalLike": _random_like(_normal_sampler),
    "RandomUniform": _random(_uniform_sampler),
    "RandomUniformLike": _random_like(_uniform_sampler),
    "Bernoulli": _bernoulli,
    "Multinomial": _multinomial,
}
