"""CPU kernels: activation operators."""

from __future__ import annotations

from tensorkiln.backends.cpu.base import Factory

KERNELS: dict[str, Factory] = {}
