"""The target fingerprint stored in engines and timing caches."""

from __future__ import annotations

import platform
from functools import lru_cache
from typing import Any

import torch

_ISA_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile",
              "avx_vnni")


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
                if flags and model:
                    break
    except OSError:
        pass
    return {"model": model, "isa": sorted(f for f in _ISA_FLAGS if f in flags)}


def fingerprint() -> dict[str, Any]:
    from tensorkiln import __version__

    info = cpu_info()
    return {
        "device": "cpu",
        "cpu": info["model"],
        "isa": info["isa"],
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "tensorkiln": __version__,
    }
