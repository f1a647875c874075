"""Window functions, MelWeightMatrix, DFT and STFT CPU kernels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto

from tests.backends.cpu import util
from tests.backends.cpu.util import Inputs


def run(op: str, inputs: Inputs, attrs: dict[str, Any] | None = None, opset: int = 17,
        consts: tuple[str, ...] = ()) -> np.ndarray:
    return util.node_outputs(op, inputs, attrs, opset=opset, consts=consts)[0]


def ort_run(op: str, inputs: Inputs, attrs: dict[str, Any] | None = None, opset: int = 17) -> np.ndarray:
    return util.node_outputs(op, inputs, attrs, opset=opset, oracle="ort")[0]


# ---------------------------------------------------------------- windows

def _formula(op: str, n: int, periodic: bool) -> np.ndarray:
    k = np.arange(n, dtype=np.float64)
    d = n if periodic else n - 1
    if op == "HannWindow":
        return 0.5 - 0.5 * np.cos(2 * np.pi * k / d)
    if op == "HammingWindow":
        return 25 / 46 - 21 / 46 * np.cos(2 * np.pi * k / d)
    return 0.42 - 0.5 * np.cos(2 * np.pi * k / d) + 0.08 * np.cos(4 * np.pi * k / d)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("const_size", [False, True])
def test_windows(op: str, periodic: int, const_size: bool) -> None:
    size = np.array(12, np.int64)
    y = run(op, [("n", size)], {"periodic": periodic}, consts=("n",) if const_size else ())
    assert y.dtype == np.float32 and y.shape == (12,)
    np.testing.assert_allclose(y, _formula(op, 12, bool(periodic)), rtol=1e-6, atol=1e-7)


def test_window_output_datatype() -> None:
    y = run("HannWindow", [("n", np.array(8, np.int32))], {"output_datatype": TensorProto.DOUBLE})
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, np.hanning(9)[:8], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- MelWeightMatrix

@pytest.mark.parametrize(("bins", "dft", "rate", "lo", "hi"),
                         [(8, 16, 8192, 0.0, 4096.0), (10, 64, 16000, 300.0, 7000.0)])
def test_mel_weight_matrix(bins: int, dft: int, rate: int, lo: float, hi: float) -> None:
    ins: Inputs = [("a", np.array(bins, np.int64)), ("b", np.array(dft, np.int64)), ("c", np.array(rate, np.int64)),
                   ("d", np.array(lo, np.float32)), ("e", np.array(hi, np.float32))]
    y = run("MelWeightMatrix", ins)
    assert y.shape == (dft // 2 + 1, bins) and y.dtype == np.float32
    np.testing.assert_allclose(y, ort_run("MelWeightMatrix", ins), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- DFT

def _pairs(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], -1).astype(np.float32)


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize(("complex_in", "onesided"), [(False, 0), (False, 1), (True, 0)],
                         ids=["real", "real_onesided", "complex"])
def test_dft_forward(opset: int, complex_in: bool, onesided: int) -> None:
    rng = np.random.default_rng(0)
    sig = rng.standard_normal((2, 8, 3)) + (1j * rng.standard_normal((2, 8, 3)) if complex_in else 0)
    x = _pairs(sig) if complex_in else sig[..., None].astype(np.float32)
    ins: Inputs = [("x", x), ("n", None)]
    if opset >= 20:
        ins.append(("axis", np.array(1, np.int64)))
    y = run("DFT", ins, {"onesided": onesided, **({"axis": 1} if opset < 20 else {})}, opset=opset,
            consts=("axis",))
    ref = np.fft.fft(sig, axis=1)
    if onesided:
        ref = ref[:, :5]
    np.testing.assert_allclose(y, _pairs(ref), rtol=1e-5, atol=1e-5)


def test_dft_length_and_inverse_round_trip() -> None:
    x = np.random.default_rng(1).standard_normal((3, 6, 1)).astype(np.float32)
    y = run("DFT", [("x", x), ("n", np.array(10, np.int64))], {"axis": 1})
    np.testing.assert_allclose(y, _pairs(np.fft.fft(x[..., 0], n=10, axis=1)), rtol=1e-5, atol=1e-5)
    back = run("DFT", [("x", y)], {"axis": 1, "inverse": 1})
    np.testing.assert_allclose(back[..., 0], np.pad(x[..., 0], ((0, 0), (0, 4))), atol=1e-5)
    half = run("DFT", [("x", x)], {"axis": 1, "onesided": 1})
    real = run("DFT", [("x", half)], {"axis": 1, "inverse": 1, "onesided": 1})
    assert real.shape == (3, 6, 1)
    np.testing.assert_allclose(real, x, atol=1e-5)


# ---------------------------------------------------------------- STFT

@pytest.mark.parametrize("with_window", [False, True])
@pytest.mark.parametrize("onesided", [0, 1])
def test_stft_matches_onnxruntime(with_window: bool, onesided: int) -> None:
    x = np.random.default_rng(2).standard_normal((2, 40, 1)).astype(np.float32)
    ins: Inputs = [("x", x), ("step", np.array(6, np.int64)),
                   ("w", np.hanning(10).astype(np.float32) if with_window else None),
                   ("len", None if with_window else np.array(10, np.int64))]
    y = run("STFT", ins, {"onesided": onesided})
    ref = ort_run("STFT", ins, {"onesided": onesided})
    assert y.shape == ref.shape == (2, 6, 6 if onesided else 10, 2)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
