import itertools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

import tensorkiln
from tensorkiln import zoo
from tensorkiln.bench import Bench, BenchSettings
from tensorkiln.bench.inputs import batch_dim, make_feeds, random_feeds, resolve_model
from tensorkiln.bench.interleave import Runner, measure_side_by_side
from tensorkiln.bench.measure import Driver, measure
from tensorkiln.bench.peers import Peer, PeerSkipped, open_peer, parse_peers
from tensorkiln.bench.sidebyside import compare_batch
from tensorkiln.errors import OptionError
from tests.helpers import tiny_model


@pytest.fixture()
def tiny_path(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(p))
    return p


def test_measure_runs_at_least_iterations_and_duration(tiny_path: Path) -> None:
    eng = tensorkiln.build(str(tiny_path))
    feeds = {"x": np.ones((4, 4), np.float32)}
    t0 = time.perf_counter()
    r = measure(eng, feeds, 4, duration_s=0.2, iterations=50, warmup_s=0.05, overhead_pairs=3)
    assert time.perf_counter() - t0 >= 0.25
    assert r.inferences >= 50 and r.wall_s >= 0.2 and len(r.times_ms) == r.inferences
    assert r.samples_per_s == pytest.approx(4 * r.inferences_per_s)
    assert r.inferences_per_s == pytest.approx(r.inferences / r.wall_s)
    assert r.overhead is not None and r.overhead.compute_ms > 0 and r.overhead.run_ms > 0
    assert 0 <= r.overhead.host_share <= 1
    j = r.to_json()
    assert j["latency_ms"]["p99"] >= j["latency_ms"]["median"] and len(j["latencies_ms"]) == r.inferences
    assert j["power"]["samples_per_s_per_w"] is None or j["power"]["samples_per_s_per_w"] > 0


def test_driver_with_streams_gives_correct_results(tiny_path: Path) -> None:
    eng = tensorkiln.build(str(tiny_path))
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    want = eng.run({"x": x})["y"]
    for streams in (1, 2):
        d = Driver(eng, streams)
        np.testing.assert_array_equal(d.request({"x": x})["y"], want)
        d.close()
    r = measure(eng, {"x": x}, 3, streams=2, duration_s=0.1, iterations=10, warmup_s=0.0)
    assert r.streams == 2 and r.inferences >= 10 and r.overhead is None
    e2 = tensorkiln.build(str(tiny_path), streams=2)  # an engine with its own streams, driven with one
    np.testing.assert_array_equal(Driver(e2, 1).request({"x": x})["y"], want)
    e2.close()


def test_feeds_follow_the_batch_dimension(tiny_path: Path) -> None:
    eng = tensorkiln.build(str(tiny_path))
    assert batch_dim(eng.inputs) == "batch"
    f = make_feeds(eng, resolve_model(str(tiny_path)), 5)
    assert f["x"].shape == (5, 4) and f["x"].dtype == np.float32
    real = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
    tiled = make_feeds(eng, None, 5, real=real)["x"]
    assert tiled.shape == (5, 4) and np.array_equal(tiled[2], real["x"][0]) and np.array_equal(tiled[3], real["x"][1])
    assert make_feeds(eng, None, 1, real=real)["x"].shape == (1, 4)
    specs = [tensorkiln.TensorSpec("ids", "int64", ("n", "seq")), tensorkiln.TensorSpec("mask", "int64", ("n", "seq"))]
    g = random_feeds(specs, 3, "n", shapes={"ids": (1, 7)})
    assert g["ids"].shape == (3, 7) and g["mask"].shape == (3, 7) and (g["mask"] == 1).all()
    assert g["ids"].dtype == np.int64 and g["ids"].min() >= 0


def test_zoo_models_are_recognised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORKILN_CACHE", str(tmp_path))
    p = zoo.cached_path("vad_lstm")
    p.parent.mkdir(parents=True)
    p.write_bytes(b"not exported: only the path matters here")
    assert resolve_model(str(p)).zoo_name == "vad_lstm"
    assert resolve_model(str(p)).onnx_path == p
    with pytest.raises(OptionError, match="neither a file nor a zoo model"):
        resolve_model("no_such_model")


def test_static_model_rejects_other_batches(tmp_path: Path) -> None:
    m = tiny_model()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 2
    eng = tensorkiln.build(m)
    assert make_feeds(eng, None, 2)["x"].shape == (2, 4)
    with pytest.raises(OptionError, match="only runs at batch 2"):
        make_feeds(eng, None, 4)


def test_budget_search(tiny_path: Path) -> None:
    b = Bench(resolve_model(str(tiny_path)), BenchSettings(duration_s=0.05, iterations=5, warmup_s=0.0))
    none = b.budget(1e-6, batches=[1, 2, 4], streams=[1, 2])
    assert none.best is None
    assert [(p.streams, p.batch) for p in none.curve] == [(1, 1), (2, 1)]  # stops at the first miss
    allok = b.budget(1e6, batches=[1, 2, 4], streams=[1])
    assert [p.batch for p in allok.curve] == [1, 2, 4] and all(p.within for p in allok.curve)
    assert allok.best is not None and allok.best.samples_per_s == max(p.samples_per_s for p in allok.curve)
    j = b.to_json()
    assert j["latency_budget"]["budget_ms"] == 1e6 and j["fingerprint"]["device"] == "cpu"
    assert j["versions"]["torch"]
    assert j["power_note"] is None or j["power_note"].startswith("power: not readable")


def test_side_by_side_ratio_reflects_speed() -> None:
    def slow(feeds: object) -> dict[str, np.ndarray]:
        time.sleep(0.006)
        return {"y": np.ones(3, np.float32)}

    broken = Peer("openvino", "0", lambda f: (_ for _ in ()).throw(RuntimeError("no such op")))
    fast = lambda: (time.sleep(0.001), {"y": np.ones(3, np.float32)})[1]  # noqa: E731
    pb = compare_batch(fast, [Peer("ort", "0", slow), broken], {}, 2, seconds=0.3, min_rounds=8, settle_s=0.0)
    rows = {r.runtime: r for r in pb.rows}
    assert set(rows) == {"tensorkiln", "ort"} and "openvino" in pb.errors and "no such op" in pb.errors["openvino"]
    assert 2.0 < rows["ort"].speedup < 12.0  # ~6x slower, on a noisy machine
    assert rows["ort"].max_rel_diff == 0.0 and rows["tensorkiln"].speedup == 1.0
    assert rows["tensorkiln"].samples_per_s > rows["ort"].samples_per_s
    # the interleave harness keeps its API
    res = measure_side_by_side([Runner("a", lambda: None), Runner("b", lambda: None)], rounds=3)
    assert len(res.times_ms["a"]) == 3 and res.baseline == "b"


def test_side_by_side_pauses_before_each_runtime() -> None:
    """The previous runtime's threads get ``settle_s`` to stop spinning before the next one's warm-up."""
    calls: list[tuple[str, float]] = []

    def rec(name: str) -> Callable[[], None]:
        return lambda: calls.append((name, time.perf_counter()))

    measure_side_by_side([Runner("a", rec("a")), Runner("b", rec("b"))], rounds=2, settle_s=0.02)
    timed = calls[2:]  # after the untimed first calls: per runtime a warm-up then the timed call
    assert [n for n, _ in timed] == ["a", "a", "b", "b", "b", "b", "a", "a"]
    gaps = [t1 - t0 for (n0, t0), (n1, t1) in itertools.pairwise(timed) if n0 != n1]
    assert len(gaps) == 2 and min(gaps) >= 0.02
    assert timed[1][1] - timed[0][1] < 0.02  # the timed call follows its warm-up at once


def test_peers(tiny_path: Path) -> None:
    assert parse_peers("ort, OpenVINO,torch,ort") == ["ort", "openvino", "torch"]
    with pytest.raises(OptionError, match="unknown peer"):
        parse_peers("tensorrt")
    with pytest.raises(PeerSkipped, match="only zoo models"):
        open_peer("torch", tiny_path, None, 1)
    with pytest.raises(PeerSkipped, match="needs the ONNX model"):
        open_peer("ort", None, None, 1)
    x = {"x": np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)}
    want = tensorkiln.build(str(tiny_path)).run(x)["y"]
    np.testing.assert_allclose(open_peer("ort", tiny_path, None, 1).run(x)["y"], want, rtol=1e-5)
    try:
        ov = open_peer("openvino", tiny_path, None, 1)
    except PeerSkipped as e:
        assert "openvino is not installed" in str(e)
        return
    np.testing.assert_allclose(ov.run(x)["y"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ov.run({"x": np.concatenate([x["x"]] * 3)})["y"][:2], want, rtol=1e-5, atol=1e-6)
