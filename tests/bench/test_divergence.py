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


def _has_int8_qdq_fusion() -> bool:
    from tensorkiln.passes.pipeline import PIPELINE

    return any(name == "fuse-qdq" for name, _ in PIPELINE)


# How the QDQ net is built: Q/DQ kept as float ops (exact), or fused into int8 kernels where
# this tensorkiln has that pass — those round differently from a float reference by a few
# units, so the search runs with a looser threshold there.
BUILDS = [pytest.param({"passes_disabled": ["fuse-qdq"]} if _has_int8_qdq_fusion() else {}, {}, id="float-qdq")]
if _has_int8_qdq_fusion():
    BUILDS.append(pytest.param({}, {"threshold": 0.05}, id="int8-kernels"))


@pytest.mark.parametrize(("build_opts", "search_opts"), BUILDS)
@pytest.mark.parametrize("kind", ["ort", "onnx-reference", "fp32"])
@pytest.mark.parametrize(("layer", "factor"), [("conv1", 1.2), ("conv2", 1.6), ("conv2", 0.8), ("conv3", 1.2)])
def test_wrong_scale_is_named(kind: str, layer: str, factor: float, build_opts: dict, search_opts: dict,
                              feeds: dict[str, np.ndarray]) -> None:
    engine = tensorkiln.build(qdq_net(corrupt=layer, factor=factor), **build_opts)  # fusions kept
    conv_steps = [s for s in engine.steps() if layer in s["origin"]]
    assert len(conv_steps) == 1 and f"{layer}_relu" in conv_steps[0]["origin"]  # conv+relu(+quantize): one step
    d = find_divergence(engine, Reference(kind, qdq_net()), feeds, **search_opts)
    assert d.first is not None
    assert layer in d.first.origin and d.first.step == conv_steps[0]["index"]
    assert d.first.value in (f"{layer}_relu", f"{layer}_act_q")  # fp32 fused conv, or the int8 QConv
    assert d.first.score > 0.1 and d.first.input_error < 0.05
    # every step before it agrees with the reference
    before = [t for t in d.taps if t.step < d.first.step]
    assert not any(t.diverged for t in before) and all(t.score < 0.03 for t in before)


@pytest.mark.parametrize(("build_opts", "search_opts"), BUILDS)
def test_clean_model_has_no_divergence(build_opts: dict, search_opts: dict, feeds: dict[str, np.ndarray]) -> None:
    engine = tensorkiln.build(qdq_net(), **build_opts)
    d = find_divergence(engine, Reference("ort", qdq_net()), feeds, **search_opts)
    assert d.first is None  # rounding differences (one unit after a Q/DQ pair) grow gradually, never jump
    assert all(t.score < search_opts.get("threshold", 0.01) for t in d.taps)
    assert len(d.taps) == engine.num_steps and d.untapped_steps == 0


def test_reference_is_fetched_in_chunks_and_taps_stream_in_order(feeds: dict[str, np.ndarray]) -> None:
    seen: list[Tap] = []
    d = find_divergence(tensorkiln.build(qdq_net(corrupt="conv2")), Reference("ort", qdq_net()), feeds,
                        chunk_bytes=20_000, on_tap=seen.append, threshold=0.05)
    assert d.reference_runs > 2  # 20 kB holds only a few of the 2x8x16x16 / 2x16x16x16 tensors
    assert [t.step for t in seen] == sorted(t.step for t in seen)
    assert d.first is not None and "conv2" in d.first.origin


def test_stop_at_first(feeds: dict[str, np.ndarray]) -> None:
    d = find_divergence(tensorkiln.build(qdq_net(corrupt="conv1")), Reference("ort", qdq_net()), feeds,
                        stop_at_first=True, threshold=0.05)
    assert d.first is not None and "conv1" in d.first.origin
    assert d.taps[-1].step == d.first.step


@pytest.mark.slow
def test_zoo_resnet50_fused_engine_matches_ort_at_every_tap() -> None:
    from tensorkiln import zoo

    path = zoo.get("resnet50")
    engine = tensorkiln.build(str(path))
    feeds = zoo.sample_inputs("resnet50", batch=1)
    d = find_divergence(engine, Reference("ort", str(path)), feeds, chunk_bytes=64 << 20)
    assert d.first is None, d.first
    # conv+bn+relu (and residual add) fused: fewer steps than ONNX nodes, yet every step is tapped
    assert len(d.taps) == engine.num_steps - d.untapped_steps and len(d.taps) > 40
    assert d.reference_runs > 1 and all(t.stats["cosine"] > 0.9999 for t in d.taps)


def test_folded_batchnorm_step_is_compared_with_the_batchnorm_output() -> None:
    """fold-batchnorm keeps the conv's value (and name) for conv+bn; it must be tapped as the BN's output."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w", rng.standard_normal((4, 3, 3, 3))), ("s", rng.uniform(0.5, 2, 4)), ("b", rng.standard_normal(4)),
        ("m", rng.standard_normal(4)), ("v", rng.uniform(0.5, 2, 4))]]
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv_out"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["conv_out", "s", "b", "m", "v"], ["bn_out"], name="bn"),
             helper.make_node("Transpose", ["bn_out"], ["y"], name="t", perm=[0, 2, 3, 1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 8, 4])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    engine = tensorkiln.build(model)
    conv_step = next(s for s in engine.steps() if "bn" in s["origin"])
    assert conv_step["outputs"] == ["conv_out"]  # the value kept its pre-BN name
    feeds = {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}
    d = find_divergence(engine, Reference("ort", model), feeds)
    tap = next(t for t in d.taps if t.step == conv_step["index"])
    assert tap.value == "bn_out" and tap.error < 1e-5 and d.first is None
