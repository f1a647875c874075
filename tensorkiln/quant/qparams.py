"""Quantization parameters: activations per tensor (uint8, asymmetric), weights per output
channel (int8, symmetric).

x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply uint8 by int8 with
``vpmaddubsw``, which adds pairs of products into a saturating int16: 255·127·2 overflows
it. oneDNN's int8 convolutions there are only exact when every pair of products fits, so on
such CPUs weights are quantized to 7 bits (``[-63, 63]``; 255·63·2 < 2¹⁵), the same trade as
PyTorch's ``reduce_range``. CPUs with VNNI (or AMX) accumulate in int32 and get 8 bits.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

QMIN, QMAX = 0, 255  # activations: uint8


@dataclass(frozen=True)
class QParams:
    """``x ≈ (q - zero_point) * scale`` with ``q`` in ``[0, 255]``."""

    scale: float
    zero_point: int

    @staticmethod
    def from_range(lo: float, hi: float) -> QParams:
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        if hi - lo <= 0.0 or not math.isfinite(hi - lo):
            return QParams(1.0, 0)
        scale = (hi - lo) / (QMAX - QMIN)
        scale = float(np.float32(scale))
        zp = round(QMIN - lo / scale)
        return QParams(scale, min(max(zp, QMIN), QMAX))

    def fake_quant_np(self, x: np.ndarray) -> np.ndarray:
        q = np.clip(np.round(x / np.float32(self.scale)) + self.zero_point, QMIN, QMAX)
        return ((q - self.zero_point) * np.float32(self.scale)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def has_vnni() -> bool:
    """True when this CPU has an int8 dot product without int16 saturation (VNNI or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return False


def weight_qmax() -> int:
    """Largest |q| of int8 weights on this CPU: 127 with VNNI, else 63 (see module doc)."""
    return 127 if has_vnni() else 63


def exact_weight_limit() -> int:
    """Largest |q| of int8 weights the int8 kernels compute exactly on this CPU: 64 without VNNI
    (255·64·2 < 2¹⁵), 127 with it. Imported (explicitly quantized) weights within it run as written."""
    return 127 if has_vnni() else 64


def quantize_weight(w: np.ndarray, qmax: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel (axis 0) symmetric int8: ``(q int8, scale float32 [K])``."""
    qmax = weight_qmax() if qmax is None else qmax
    w = np.asarray(w, np.float32)
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) if w.size else np.zeros(w.shape[0], np.float32)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -qmax, qmax).astype(np.int8)
    return q, scale


def dequantize_weight(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32) * scale.reshape((-1,) + (1,) * (q.ndim - 1))).astype(np.float32)
