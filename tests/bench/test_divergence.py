"""First-divergence debugging on a QDQ conv net with one deliberately wrong weight scale."""

import numpy as np
import pytest

import tensorkiln
from tensorkiln.bench.accuracy import Reference
from tensorkiln.bench.divergence import Tap, find_divergence
from tests.bench.qdq_net import qdq_net


@pytest.fixture(scope="module")
def feeds() -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)}


@pytest.mark.parametrize("kind", ["ort", "onnx-reference", "fp32"])
@pytest.mark.parametrize("layer", ["conv2", "conv3"])
def test_wrong_scale_is_named(kind: str, layer: str, feeds: dict[str, np.ndarray]) -> None:
    engine = tensorkiln.build(qdq_net(corrupt=layer))  # fusions kept: conv+relu is one step
    assert any(s["op"].endswith("FusedConv") for s in engine.steps())
    d = find_divergence(engine, Reference(kind, qdq_net()), feeds)
    assert d.first is not None
    assert layer in d.first.origin and d.first.value == f"{layer}_relu"
    assert d.first.op.endswith("FusedConv") and d.first.error > 0.1 and d.first.input_error < 1e-2
    # every step before it agrees with the reference
    before = [t for t in d.taps if t.step < d.first.step]
    assert before and all(t.error < 1e-2 for t in before)


def test_clean_model_has_no_divergence(feeds: dict[str, np.ndarray]) -> None:
    d = find_divergence(tensorkiln.build(qdq_net()), Reference("ort", qdq_net()), feeds)
    assert d.first is None
    assert len(d.taps) == tensorkiln.build(qdq_net()).num_steps and d.untapped_steps == 0


def test_reference_is_fetched_in_chunks_and_taps_stream_in_order(feeds: dict[str, np.ndarray]) -> None:
    seen: list[Tap] = []
    d = find_divergence(tensorkiln.build(qdq_net(corrupt="conv2")), Reference("ort", qdq_net()), feeds,
                        chunk_bytes=20_000, on_tap=seen.append)
    assert d.reference_runs > 2  # 20 kB holds only a few of the 2x8x16x16 / 2x16x16x16 tensors
    assert [t.step for t in seen] == sorted(t.step for t in seen)
    assert d.first is not None and "conv2" in d.first.origin


def test_stop_at_first(feeds: dict[str, np.ndarray]) -> None:
    d = find_divergence(tensorkiln.build(qdq_net(corrupt="conv1")), Reference("ort", qdq_net()), feeds,
                        stop_at_first=True)
    assert d.first is not None and "conv1" in d.first.origin
    assert d.taps[-1].step == d.first.step
