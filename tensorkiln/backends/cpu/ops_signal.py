"""CPU kernels: signal-processing operators.

* ``HannWindow``, ``HammingWindow``, ``BlackmanWindow`` (opset 17): window of length
  ``size`` (a scalar input), ``periodic`` (default 1) or symmetric, computed in float64 and
  cast to ``output_datatype`` (default float32). Hamming uses ONNX's α = 25/46.
* ``MelWeightMatrix`` (opset 17): the triangular mel filter bank of shape
  ``(dft_length // 2 + 1, num_mel_bins)``, with ONNX's integer bin placement.
* ``DFT`` (opset 17: ``axis`` attribute, default 1; opset 20: ``axis`` input, default -2):
  real (last dim 1) or complex (last dim 2) signal, optional ``dft_length``, ``onesided``,
  ``inverse`` (a onesided inverse is an inverse real FFT with a last dim of 1).
* ``STFT`` (opset 17): frames of ``frame_length`` every ``frame_step`` samples, optional
  window, ``onesided``.

Transforms run in float32 (float64 for float64 input) and are cast back to the input type.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tensorkiln.backends.cpu.base import (
    BuildContext,
    Factory,
    Kernel,
    attr,
    const_input,
    torch_dtype,
)
from tensorkiln.ir import Node

Tensor = torch.Tensor


# ---------------------------------------------------------------- windows

def _hann(n: np.ndarray, denom: float) -> np.ndarray:
    return np.sin(n * math.pi / denom) ** 2


def _hamming(n: np.ndarray, denom: float) -> np.ndarray:
    alpha = 25.0 / 46.0
    return alpha - (1.0 - alpha) * np.cos(n * (2 * math.pi) / denom)


def _blackman(n: np.ndarray, denom: float) -> np.ndarray:
    return 0.42 - 0.5 * np.cos(n * (2 * math.pi) / denom) + 0.08 * np.cos(n * (4 * math.pi) / denom)


def _window(fn: object) -> Factory:
    def factory(node: Node, ctx: BuildContext) -> Kernel:
        periodic = bool(attr(node, "periodic", 1))
        out_dt = torch_dtype(int(attr(node, "output_datatype", 1)))

        def make(size: int) -> Tensor:
            if size < 0:
                raise ValueError(f"window size must be nonnegative, got {size}")
            n = np.arange(size, dtype=np.float64)
            denom = float(size if periodic else size - 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                w = fn(n, denom)  # type: ignore[operator]
            return torch.from_numpy(np.ascontiguousarray(w)).to(out_dt)

        c = const_input(node, 0)
        if c is not None:
            fixed = make(int(np.asarray(c).reshape(())))
            return lambda size: fixed.clone()
        return lambda size: make(int(size.reshape(()).item()))

    return factory


# ---------------------------------------------------------------- MelWeightMatrix

def _mel_matrix(num_mel_bins: np.ndarray, dft_length: np.ndarray, sample_rate: np.ndarray,
                lower_hz: np.ndarray, upper_hz: np.ndarray) -> np.ndarray:
    """Mirrors the ONNX definition step by step, with numpy's dtype promotion."""
    n_mel = int(num_mel_bins)
    n_dft = int(dft_length)
    n_spec = n_dft // 2 + 1
    bins = np.arange(0, n_mel + 2)
    low_mel = 2595 * np.log1p(lower_hz / 700) / np.log(10)
    high_mel = 2595 * np.log1p(upper_hz / 700) / np.log(10)
    step = (high_mel - low_mel) / bins.shape[0]
    hz = 700 * np.expm1((bins * step + low_mel) / 2595 * np.log(10))
    edges = (((n_dft + 1) * hz) // sample_rate).astype(np.int64)
    out = np.zeros((n_spec, n_mel))
    for i in range(n_mel):
        lo, mid, hi = int(edges[i]), int(edges[i + 1]), int(edges[i + 2])
        if mid == lo:
            out[mid, i] = 1
        else:
            for j in range(lo, mid + 1):
                out[j, i] = (j - lo) / (mid - lo)
        if hi > mid:
            for j in range(mid, hi):
                out[j, i] = (hi - j) / (hi - mid)
    return out


def _mel_weight_matrix(node: Node, ctx: BuildContext) -> Kernel:
    out_dt = torch_dtype(int(attr(node, "output_datatype", 1)))

    def k(*args: Tensor) -> Tensor:
        vals = [a.reshape(()).numpy() for a in args]
        return torch.from_numpy(_mel_matrix(*vals)).to(out_dt)

    consts = [const_input(node, i) for i in range(5)]
    if all(c is not None for c in consts):
        fixed = torch.from_numpy(_mel_matrix(*[np.asarray(c).reshape(()) for c in consts])).to(out_dt)
        return lambda *args: fixed.clone()
    return k


# ---------------------------------------------------------------- DFT / STFT

def _compute_dtype(dt: torch.dtype) -> torch.dtype:
    return torch.float64 if dt == torch.float64 else torch.float32


def _as_complex(x: Tensor) -> Tensor:
    """(..., 1) real or (..., 2) complex → a tensor without the last axis."""
    x = x.to(_compute_dtype(x.dtype))
    if x.shape[-1] == 1:
        return x.squeeze(-1)
    if x.shape[-1] == 2:
        return torch.complex(x[..., 0], x[..., 1])
    raise ValueError(f"the last dimension must be 1 (real) or 2 (complex), got {x.shape[-1]}")


def _to_pairs(y: Tensor, dtype: torch.dtype) -> Tensor:
    if y.is_complex():
        return torch.stack((y.real, y.imag), -1).to(dtype)
    return y.unsqueeze(-1).to(dtype)


def _dft(node: Node, ctx: BuildContext) -> Kernel:
    inverse = bool(attr(node, "inverse", 0))
    onesided = bool(attr(node, "onesided", 0))
    # opset 17: ``axis`` attribute (default 1); opset 20: optional ``axis`` input (default -2)
    axis_default = int(attr(node, "axis", 1)) if node.opset < 20 else -2
    c = const_input(node, 2) if node.opset >= 20 else None
    if c is not None:
        axis_default = int(np.asarray(c).reshape(()))

    def k(x: Tensor, dft_length: Tensor | None = None, axis_in: Tensor | None = None) -> Tensor:
        r = x.dim()
        a = axis_default if axis_in is None or c is not None else int(axis_in.reshape(()).item())
        axis = a % r
        if axis >= r - 1:
            raise ValueError(f"axis {a} is the real/imaginary axis of a rank-{r} input")
        if dft_length is not None:
            n = int(dft_length.reshape(()).item())
        elif inverse and onesided:
            n = 2 * (x.shape[axis] - 1)
        else:
            n = x.shape[axis]
        sig = _as_complex(x)
        if inverse:
            y = torch.fft.irfft(sig, n=n, dim=axis) if onesided else torch.fft.ifft(sig, n=n, dim=axis)
        else:
            y = torch.fft.fft(sig, n=n, dim=axis)
            if onesided:
                y = y.narrow(axis, 0, n // 2 + 1)
        return _to_pairs(y, x.dtype)

    return k


def _stft(node: Node, ctx: BuildContext) -> Kernel:
    onesided = bool(attr(node, "onesided", 1))

    def k(x: Tensor, frame_step: Tensor, window: Tensor | None = None,
          frame_length: Tensor | None = None) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"signal must be (batch, length, 1|2), got shape {tuple(x.shape)}")
        step = int(frame_step.reshape(()).item())
        if frame_length is not None:
            fl = int(frame_length.reshape(()).item())
        elif window is not None:
            fl = window.shape[0]
        else:
            fl = x.shape[1]
        wsize = window.shape[0] if window is not None else fl
        sig = _as_complex(x)  # (B, L)
        n_frames = 1 + (sig.shape[1] - fl) // step
        if n_frames <= 0:
            raise ValueError(f"signal of length {sig.shape[1]} is shorter than frame_length {fl}")
        span = (n_frames - 1) * step + wsize
        if span > sig.shape[1]:
            sig = torch.nn.functional.pad(sig, (0, span - sig.shape[1]))
        frames = sig.unfold(1, wsize, step)[:, :n_frames]  # (B, frames, wsize)
        if window is not None:
            frames = frames * window.to(frames.real.dtype if frames.is_complex() else frames.dtype)
        y = torch.fft.fft(frames, n=fl, dim=-1)
        if onesided:
            y = y[..., : fl // 2 + 1]
        return _to_pairs(y, x.dtype)

    return k


KERNELS: dict[str, Factory] = {
    "HannWindow": _window(_hann),
    "HammingWindow": _window(_hamming),
    "BlackmanWindow": _window(_blackman),
    "MelWeightMatrix": _mel_weight_matrix,
    "DFT": _dft,
    "STFT": _stft,
}
