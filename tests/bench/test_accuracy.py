import math

import numpy as np
import pytest

import tensorkiln
from tensorkiln.bench.accuracy import (
    Reference,
    Tolerance,
    build_under_test,
    compare_output,
    compare_outputs,
    error_stats,
    min_rtol,
    topk_agreement,
    with_outputs,
)
from tensorkiln.errors import OptionError
from tests.bench.qdq_net import qdq_net
from tests.helpers import tiny_model


def test_error_stats() -> None:
    ref = np.array([1.0, -2.0, 3.0, 0.0], np.float32)
    got = ref + np.array([0.0, 0.1, -0.3, 0.0], np.float32)
    s = error_stats(got, ref)
    assert s["max_abs"] == pytest.approx(0.3, rel=1e-6)
    assert s["mean_abs"] == pytest.approx(0.1, rel=1e-6)
    assert s["median_abs"] == pytest.approx(0.05, rel=1e-5)
    assert s["rel_rms"] == pytest.approx(math.sqrt((0.01 + 0.09) / 4) / math.sqrt(14 / 4), rel=1e-5)
    cos = float(np.dot(got, ref) / np.linalg.norm(got) / np.linalg.norm(ref))
    assert s["cosine"] == pytest.approx(cos, rel=1e-6)
    nan = error_stats(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
    assert math.isinf(nan["max_abs"])
    assert error_stats(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))["max_abs"] == 0.0


def test_min_rtol_is_exact_and_tolerances_pass_at_it() -> None:
    ref = np.array([1.0, 10.0, -4.0])
    got = np.array([1.01, 10.5, -4.0])
    r = min_rtol(got, ref, 0.0)
    assert r == pytest.approx(0.05)
    assert np.allclose(got, ref, rtol=r * 1.0001, atol=0) and not np.allclose(got, ref, rtol=r * 0.99, atol=0)
    assert min_rtol(got, ref, 0.5) == 0.0
    assert math.isinf(min_rtol(np.array([0.1]), np.array([0.0]), 0.0))


def test_topk_agreement() -> None:
    ref = np.array([[0.1, 0.9, 0.5, 0.2], [3.0, 1.0, 2.0, 0.0]])
    same = topk_agreement(ref.copy(), ref, ks=(1, 2))
    assert same == {"top1_match": 1.0, "top2_overlap": 1.0}
    swapped = ref.copy()
    swapped[1] = [1.0, 3.0, 2.0, 0.0]  # row 1: top-1 changes, top-2 set {0,2} -> {1,2}
    t = topk_agreement(swapped, ref, ks=(1, 2))
    assert t["top1_match"] == 0.5 and t["top2_overlap"] == pytest.approx(0.75)
    assert topk_agreement(np.zeros(3), np.zeros(3)) == {}


def test_compare_output_pass_fail_and_would_pass() -> None:
    ref = np.linspace(-1, 1, 20, dtype=np.float32)
    got = ref + 1e-3
    ok = compare_output("y", got, ref, Tolerance(0.0, 2e-3))
    bad = compare_output("y", got, ref, Tolerance(1e-5, 1e-5))
    assert ok.passed and not bad.passed
    wp = dict(bad.would_pass)
    assert wp[1e-2] == 0.0 and wp[1e-4] > 0
    mism = compare_output("y", got[:5], ref, Tolerance(1, 1))
    assert not mism.passed and "shape" in mism.problem
    with pytest.raises(OptionError, match="unknown output"):
        compare_outputs({"y": got}, {"y": ref}, Tolerance(1, 1), {"nope": Tolerance(1, 1)})


@pytest.mark.parametrize("kind", ["fp32", "ort", "onnx-reference"])
def test_references_agree_with_engine(kind: str) -> None:
    m = tiny_model()
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    ref = Reference(kind, m).run({"x": x}, extra=["xwb"])
    got = tensorkiln.build(m).run({"x": x})
    np.testing.assert_allclose(ref["y"], got["y"], rtol=1e-5, atol=1e-6)
    assert ref["xwb"].shape == (3, 3)  # an intermediate added as an extra output


def test_with_outputs_adds_typed_outputs() -> None:
    m = with_outputs(qdq_net(), ["conv2_relu", "conv2_act_q", "logits"])
    outs = {o.name: o for o in m.graph.output}
    assert list(outs) == ["logits", "conv2_relu", "conv2_act_q"]
    assert outs["conv2_act_q"].type.tensor_type.elem_type == 2  # uint8


def test_precision_needs_builder_support() -> None:
    if "precision" in tensorkiln.BuildConfig.__dataclass_fields__:
        pytest.skip("this build has a precision option; the clear-error path does not apply")
    with pytest.raises(OptionError, match="precision"):
        build_under_test(tiny_model(), "int8")
    assert build_under_test(tiny_model(), "fp32").num_steps > 0
