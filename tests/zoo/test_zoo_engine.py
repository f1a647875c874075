"""Every zoo model through ``tensorkiln.build`` matches onnxruntime at batch 1 and 4.

Uses the real zoo cache (``zoo.get``), so each model is exported once per machine; vgg19
and bert are marked slow.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensorkiln
from tensorkiln import zoo

ort = pytest.importorskip("onnxruntime")

NAMES = ["alexnet", "googlenet", "resnet50", "vgg19", "mobilenetv2", "bert", "lstm_nmt", "vad_lstm"]
SLOW = {"vgg19", "bert"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES])
def test_engine_matches_onnxruntime(name: str) -> None:
    path = zoo.get(name)
    engine = tensorkiln.build(str(path))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    assert out_names == [s.name for s in zoo.info(name).outputs]
    for batch in (1, 4):
        feeds = zoo.sample_inputs(name, batch=batch, seed=batch)
        want = dict(zip(out_names, sess.run(out_names, feeds)))
        got = engine.run({k: v.copy() for k, v in feeds.items()})
        assert set(got) == set(want), f"{name}: outputs {sorted(got)} != {sorted(want)}"
        for out, w in want.items():
            g = np.asarray(got[out])
            what = f"{name} {out} batch {batch}"
            assert g.shape == w.shape, f"{what}: shape {g.shape} != {w.shape}"
            assert g.dtype == w.dtype, f"{what}: dtype {g.dtype} != {w.dtype}"
            assert np.isfinite(g).all(), f"{what}: not finite"
            scale = float(np.abs(w).max())
            err = float(np.abs(g.astype(np.float64) - w).max())
            assert err <= 1e-3 * scale, f"{what}: max abs err {err:.3g} > 1e-3 * {scale:.3g}"
