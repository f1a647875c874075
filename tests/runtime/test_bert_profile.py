"""Zoo BERT encoder with one optimization profile (batch 1–16, sequence 8–256)."""

import numpy as np
import pytest

import tensorkiln
from tensorkiln import zoo

pytestmark = pytest.mark.slow

PROFILE = {
    "input_ids": {"min": (1, 8), "opt": (8, 128), "max": (16, 256)},
    "attention_mask": {"min": (1, 8), "opt": (8, 128), "max": (16, 256)},
}
SHAPES = [(1, 8), (2, 37), (8, 128), (3, 256), (16, 16), (5, 100)]


@pytest.fixture(scope="module")
def setup() -> tuple[tensorkiln.Engine, object]:
    ort = pytest.importorskip("onnxruntime")
    path = zoo.get("bert")
    eng = tensorkiln.build(path, shapes=PROFILE)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return eng, sess


@pytest.mark.parametrize("batch,seq", SHAPES)
def test_matches_onnxruntime_inside_profile(setup: tuple[tensorkiln.Engine, object], batch: int, seq: int) -> None:
    eng, sess = setup
    feeds = zoo.sample_inputs("bert", batch=batch, seq=seq, seed=batch * 1000 + seq)
    ref = sess.run(None, feeds)  # type: ignore[attr-defined]
    out = eng.run(feeds)
    for spec, r in zip(eng.outputs, ref):
        err = float(np.max(np.abs(out[spec.name] - r)))
        assert err <= 1e-3 * float(np.max(np.abs(r))), (spec.name, err)


def test_shape_outside_profile(setup: tuple[tensorkiln.Engine, object]) -> None:
    eng, _ = setup
    feeds = zoo.sample_inputs("bert", batch=1, seq=300)
    with pytest.raises(tensorkiln.FeedError, match=r"input 'input_ids' has shape \[1, 300\], outside every "
                                                   r"optimization profile"):
        eng.run(feeds)
