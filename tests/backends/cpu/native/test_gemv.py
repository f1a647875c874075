"""Fully connected layers at batch 1..4 as matrix-vector products (gemv.c)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tensorkiln
from tensorkiln.backends.cpu import native
from tensorkiln.backends.cpu.native import gemv
from tests.runtime.test_concurrency import conv_model

pytestmark = pytest.mark.skipif(not gemv.available(),
                                reason=f"native gemv kernels unavailable: {native.why_unavailable('gemv')}")


@pytest.mark.parametrize(("rows", "m", "k"), [(1, 1000, 2048), (3, 37, 19), (4, 5, 33), (2, 300, 1031)])
@pytest.mark.parametrize(("act", "params"), [("", []), ("Relu", []), ("Clip", [-0.5, 0.5])])
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_float64(rows: int, m: int, k: int, act: str, params: list[float], with_bias: bool) -> None:
    rng = np.random.default_rng(m + k)
    w = rng.standard_normal((m, k)).astype(np.float32) / np.sqrt(k)
    b = rng.standard_normal(m).astype(np.float32) if with_bias else None
    x = torch.from_numpy(rng.standard_normal((rows, k)).astype(np.float32))
    y = gemv.Gemv(w, b, act, params)(x)
    ref = torch.nn.functional.linear(x.double(), torch.from_numpy(w).double(),
                                     None if b is None else torch.from_numpy(b).double())
    ref = ref.relu() if act == "Relu" else ref.clamp(*params) if act == "Clip" else ref
    assert y.shape == (rows, m)
    assert torch.allclose(y.double(), ref, rtol=1e-5, atol=1e-5)


def test_engine_uses_gemv_at_small_batches_and_blas_above(tmp_path: Path) -> None:
    e = tensorkiln.build(conv_model(), opt_level=0)
    ref = tensorkiln.build(conv_model(), optimize=False)
    gemm = next(n for n in e.graph.nodes if n.op_type == "FusedGemm")
    gemm.attrs["tactic"] = "native-gemv"
    e._lower()
    assert any(s["tactic"] == "native-gemv" for s in e.steps())
    for batch in (1, 4, 5, 9):  # 5 and 9 rows: the BLAS path of the same step
        x = np.random.default_rng(batch).standard_normal((batch, 3, 12, 12)).astype(np.float32)
        np.testing.assert_allclose(e.run({"x": x})["y"], ref.run({"x": x})["y"], rtol=1e-4, atol=1e-4)
    path = tmp_path / "e.tkengine"
    e.save(path)
    assert any(s["tactic"] == "native-gemv" for s in tensorkiln.load(str(path)).steps())


def test_falls_back_where_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorkiln.backends.cpu import ops_fused

    e = tensorkiln.build(conv_model(), opt_level=0)
    next(n for n in e.graph.nodes if n.op_type == "FusedGemm").attrs["tactic"] = "native-gemv"
    path = tmp_path / "e.tkengine"
    e.save(path)
    monkeypatch.setattr(ops_fused, "_gemv_available", lambda: False)
    loaded = tensorkiln.load(str(path))
    assert all(s["tactic"] != "native-gemv" for s in loaded.steps())
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(loaded.run({"x": x})["y"], tensorkiln.build(conv_model(), optimize=False)
                               .run({"x": x})["y"], rtol=1e-4, atol=1e-4)
