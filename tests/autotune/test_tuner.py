import json
import os
from pathlib import Path

import numpy as np
import pytest

import tensorkiln
from tensorkiln.autotune import TimingCache, merge_caches
from tensorkiln.backends.cpu.native import directconv, why_unavailable, winograd
from tests.runtime.test_concurrency import conv_model

X = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)


def _tactics(e: tensorkiln.Engine) -> dict[str, str]:
    return {r["node"]: r["chosen"] for r in e.tuning}


@pytest.mark.parametrize("tactic", ["onednn-nhwc", "aten-nhwc", "aten-nchw", "winograd-f43", "direct-nhwc"])
def test_every_conv_tactic_gives_the_same_numbers(tactic: str, tmp_path: Path) -> None:
    if tactic == "winograd-f43" and not winograd.available():
        pytest.skip(f"native Winograd kernels unavailable: {why_unavailable('winograd')}")
    if tactic == "direct-nhwc" and not directconv.available():
        pytest.skip(f"direct conv kernels unavailable: {why_unavailable('directconv') or 'no AVX2/FMA'}")
    ref = tensorkiln.build(conv_model(), optimize=False).run({"x": X})["y"]
    e = tensorkiln.build(conv_model(), opt_level=0)
    conv = next(n for n in e.graph.nodes if n.op_type == "FusedConv")
    conv.attrs["tactic"] = tactic
    e._lower()
    assert e.steps()[0]["tactic"] == tactic
    np.testing.assert_allclose(e.run({"x": X})["y"], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tactic", ["aten-linear", "onednn-linear", "native-gemv"])
def test_every_gemm_tactic_gives_the_same_numbers(tactic: str) -> None:
    ref = tensorkiln.build(conv_model(), optimize=False).run({"x": X})["y"]
    e = tensorkiln.build(conv_model(), opt_level=0)
    gemm = next(n for n in e.graph.nodes if n.op_type == "FusedGemm")
    gemm.attrs["tactic"] = tactic
    e._lower()
    np.testing.assert_allclose(e.run({"x": X})["y"], ref, rtol=1e-4, atol=1e-4)


def test_warm_cache_is_reused_and_choices_replay(tmp_path: Path) -> None:
    cache = tmp_path / "timing.json"
    cold = tensorkiln.build(conv_model(), timing_cache=str(cache))
    assert cache.is_file() and cold.tuning and cold.tuning_stats["cache_misses"] > 0
    warm = tensorkiln.build(conv_model(), timing_cache=str(cache))
    assert warm.tuning_stats["cache_misses"] == 0 and all(r["from_cache"] for r in warm.tuning)
    again = tensorkiln.build(conv_model(), timing_cache=str(cache))
    assert _tactics(warm) == _tactics(again)


def test_read_only_cache_is_used_but_not_written(tmp_path: Path) -> None:
    cache = tmp_path / "ro" / "timing.json"
    tensorkiln.build(conv_model(), timing_cache=str(cache))
    before = cache.read_text()
    os.chmod(cache.parent, 0o555)
    try:
        e = tensorkiln.build(conv_model(), timing_cache=str(cache), opt_level=3)
    finally:
        os.chmod(cache.parent, 0o755)
    assert e.tuning and cache.read_text() == before


def test_cache_of_another_machine_is_ignored(tmp_path: Path) -> None:
    cache = tmp_path / "timing.json"
    tensorkiln.build(conv_model(), timing_cache=str(cache))
    doc = json.loads(cache.read_text())
    doc["machine"]["cpu"] = "some other CPU"
    cache.write_text(json.dumps(doc))
    e = tensorkiln.build(conv_model(), timing_cache=str(cache))
    assert e.tuning_stats["cache_hits"] == 0


def test_merge_caches(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    tensorkiln.build(conv_model(), timing_cache=str(a))
    tensorkiln.build(conv_model(), timing_cache=str(b), opt_level=0)  # level 0: no timing, no file
    assert not b.exists()
    tensorkiln.build(conv_model(), timing_cache=str(b), opt_level=4)
    n = merge_caches([a, b], tmp_path / "m.json")
    machine = json.loads(a.read_text())["machine"]
    merged = TimingCache(tmp_path / "m.json", machine).entries
    assert n == len(merged) and set(TimingCache(a, machine).entries) <= set(merged)


def test_pinned_tactics_replay(tmp_path: Path) -> None:
    e = tensorkiln.build(conv_model(), timing_cache="")
    conv = next(r["node"] for r in e.tuning if r["op"] == "tensorkiln::FusedConv")
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({conv: "aten-nchw"}))
    p = tensorkiln.build(conv_model(), tactics_file=str(pins), timing_cache="")
    assert _tactics(p)[conv] == "aten-nchw"
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"tuning": p.tuning}))
    r = tensorkiln.build(conv_model(), tactics_file=str(report), timing_cache="")
    assert _tactics(r) == _tactics(p)


def test_opt_level_zero_keeps_heuristics() -> None:
    e = tensorkiln.build(conv_model(), opt_level=0)
    assert e.tuning == []
    with pytest.raises(tensorkiln.OptionError, match="opt_level"):
        tensorkiln.build(conv_model(), opt_level=9)


@pytest.mark.parametrize("tactic", ["winograd-f43", "gemm-1x1", "direct-nhwc"])
def test_native_tactic_falls_back_where_unavailable(tactic: str, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    """An engine tuned where a C compiler exists, loaded where none does, still runs (oneDNN)."""
    from tensorkiln.backends.cpu import ops_fused

    if tactic == "gemm-1x1":
        from tests.backends.cpu.native.test_gemm1x1 import _bottleneck as model
        x = np.random.default_rng(0).standard_normal((2, 32, 9, 9)).astype(np.float32)
    else:
        model, x = conv_model, X
    ref = tensorkiln.build(model(), optimize=False).run({"x": x})
    e = tensorkiln.build(model(), opt_level=0)
    for n in e.graph.nodes:
        if n.op_type == "FusedConv":
            n.attrs["tactic"] = tactic
    path = tmp_path / "e.tkengine"
    e.save(path)
    monkeypatch.setattr(ops_fused, "_winograd_available", lambda: False)
    monkeypatch.setattr(ops_fused, "_gemm1x1_available", lambda: False)
    monkeypatch.setattr(ops_fused, "_direct_available", lambda: False)
    loaded = tensorkiln.load(str(path))
    assert all(s.get("tactic") != tactic for s in loaded.steps())
    for k, v in loaded.run({"x": x}).items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-4, atol=1e-4)


def test_new_tactic_retimes_every_candidate_side_by_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache miss for one tactic re-times all of the layer's tactics together: timings taken at
    different times on a shared machine are not compared with each other."""
    from tensorkiln.autotune import tuner

    cache = tmp_path / "timing.json"
    tensorkiln.build(conv_model(), timing_cache=str(cache))
    doc = json.loads(cache.read_text())
    conv_keys = [k for k in doc["entries"] if "FusedConv" in k and "#" not in k]
    assert len(conv_keys) >= 2
    for k in conv_keys:
        doc["entries"][k] = 1e6  # stale numbers: must all be replaced, not only the missing one
    del doc["entries"][conv_keys[0]]
    cache.write_text(json.dumps(doc))
    swept: list[dict[int, list[str]]] = []
    real = tuner._sweep

    def spy(program, inputs, registry, todo, *a):  # type: ignore[no-untyped-def]
        swept.append(todo)
        return real(program, inputs, registry, todo, *a)

    monkeypatch.setattr(tuner, "_sweep", spy)
    e = tensorkiln.build(conv_model(), timing_cache=str(cache))
    assert [len(t) for t in swept[0].values()] == [len(conv_keys)]  # only the conv, all tactics
    assert all(next(iter(t.values()))[0] == "onednn-nhwc" and len(t) == 1 for t in swept[1:])  # close calls only
    rec = next(r for r in e.tuning if r["op"] == "tensorkiln::FusedConv")
    assert len(rec["times_ms"]) == len(conv_keys) and all(ms < 1e6 for ms in rec["times_ms"].values())


def test_tactics_are_timed_in_place_inside_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every (step, tactic) gets one time per round, from whole-network runs of that variant;
    a tactic whose kernel fails on a layer drops out for that layer only."""
    from tensorkiln.autotune import tuner
    from tensorkiln.backends.cpu import ops_fused

    real = ops_fused.fused_conv

    def aten_nhwc_fails(node, ctx):  # type: ignore[no-untyped-def]
        k = real(node, ctx)
        if node.attrs.get("tactic") != "aten-nhwc":
            return k

        def broken(*args):  # type: ignore[no-untyped-def]
            raise RuntimeError("this tactic cannot run here")
        return broken

    monkeypatch.setitem(tuner_registry(), ("tensorkiln", "FusedConv"), aten_nhwc_fails)
    e = tensorkiln.build(conv_model(), timing_cache="", opt_level=1)
    rec = next(r for r in e.tuning if r["op"] == "tensorkiln::FusedConv")
    assert "aten-nhwc" not in rec["times_ms"] and "onednn-nhwc" in rec["times_ms"]
    assert rec["chosen"] != "aten-nhwc"
    np.testing.assert_allclose(e.run({"x": X})["y"], tensorkiln.build(conv_model(), optimize=False).run({"x": X})["y"],
                               rtol=1e-4, atol=1e-4)
    assert tuner.TIMING_METHOD.startswith("in-model")


def tuner_registry() -> dict:  # type: ignore[type-arg]
    from tensorkiln.engine.tuning import REGISTRY

    return REGISTRY


def test_close_calls_get_a_second_set_of_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A challenger faster by median but winning only half of the paired rounds is timed again
    (incumbent and that challenger only), and the decision uses both sets of rounds."""
    from tensorkiln.autotune import tuner

    calls: list[dict[int, list[str]]] = []

    def fake_sweep(program, inputs, registry, todo, rounds, *a):  # type: ignore[no-untyped-def]
        calls.append({i: list(t) for i, t in todo.items()})
        out = {}
        for i, tacs in todo.items():
            for t in tacs:
                inc = tuner._default_tactic(program.steps[i].node)
                if len(calls) == 1:  # first rounds: a challenger 10 % faster by median, 3 wins of 6
                    ts = [1.0] * 6 if t == inc else ([0.5, 0.5, 0.5, 1.1, 1.1, 1.1] if t == "aten-nhwc" else [2.0] * 6)
                else:  # second rounds: it wins every time
                    ts = [1.0] * 6 if t == inc else [0.8] * 6
                out[(i, t)] = ts
        return out

    monkeypatch.setattr(tuner, "_sweep", fake_sweep)
    monkeypatch.setattr(tuner, "_whole_network_check", lambda *a: None)  # per-layer logic only
    e = tensorkiln.build(conv_model(), timing_cache="")
    assert len(calls) == 2
    ((step, tacs),) = calls[1].items()
    assert tacs == [tuner._default_tactic(e._program.steps[step].node), "aten-nhwc"]
    rec = next(r for r in e.tuning if r["op"] == "tensorkiln::FusedConv")
    assert rec["chosen"] == "aten-nhwc"  # 9 wins of 12 after the second rounds


def test_clear_calls_are_not_timed_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorkiln.autotune import tuner

    calls: list[dict[int, list[str]]] = []

    def fake_sweep(program, inputs, registry, todo, rounds, *a):  # type: ignore[no-untyped-def]
        calls.append(todo)
        inc = {i: tuner._default_tactic(program.steps[i].node) for i in todo}
        return {(i, t): ([1.0] * 6 if t == inc[i] else [1.5] * 6) for i, tacs in todo.items() for t in tacs}

    monkeypatch.setattr(tuner, "_sweep", fake_sweep)
    e = tensorkiln.build(conv_model(), timing_cache="")
    assert len(calls) == 1
    rec = next(r for r in e.tuning if r["op"] == "tensorkiln::FusedConv")
    assert rec["chosen"] == rec["incumbent"]


@pytest.mark.parametrize("mixed_ms,kept", [(9.0, True), (11.0, False)])
def test_per_layer_choices_must_win_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mixed_ms: float,
                                               kept: bool) -> None:
    """Per-layer winners are kept only if the network with them beats the heuristic tactics end to
    end; the two medians are cached, so a warm build decides alike without timing."""
    from tensorkiln.autotune import tuner

    def fake_sweep(program, inputs, registry, todo, rounds, *a):  # type: ignore[no-untyped-def]
        inc = {i: tuner._default_tactic(program.steps[i].node) for i in todo}  # aten-nhwc wins clearly
        return {(i, t): ([1.0] * 6 if t == inc[i] else [0.5] * 6 if t == "aten-nhwc" else [2.0] * 6)
                for i, tacs in todo.items() for t in tacs}

    timed: list[int] = []

    def fake_time(progs, inputs, rounds, budget_s=0.0):  # type: ignore[no-untyped-def]
        timed.append(len(progs))  # heuristic, per-layer choices (aten-nhwc is not a chained tactic)
        return [[10.0] * rounds, [mixed_ms] * rounds]

    monkeypatch.setattr(tuner, "_sweep", fake_sweep)
    monkeypatch.setattr(tuner, "_time_programs", fake_time)
    cache = str(tmp_path / "t.json")
    for _ in range(2):  # cold, then warm
        e = tensorkiln.build(conv_model(), timing_cache=cache)
        rec = next(r for r in e.tuning if r["op"] == "tensorkiln::FusedConv")
        assert rec["chosen"] == ("aten-nhwc" if kept else rec["incumbent"])
        assert ("note" in rec) == (not kept) and (kept or "chosen 11.00 ms" in rec["note"])
        assert _tactics(e)[rec["node"]] == rec["chosen"]
    assert timed == [2]  # the warm build took both medians from the cache
    from tensorkiln.backends.cpu import ops_fused

    monkeypatch.setitem(ops_fused.CONV_TACTICS, "aten-nhwc", ops_fused.CONV_TACTICS["aten-nhwc"] + 1)
    tensorkiln.build(conv_model(), timing_cache=cache)
    assert timed == [2, 2]  # a new version of a chosen tactic: the network is timed again


def test_whole_network_check_pairs_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's speed drifts between rounds: the per-layer choices ran 0.9x the heuristic set in
    three rounds of five and fell into slow periods in the other two; the heuristic set's slow
    rounds were others. Plain medians (27 vs 10 ms) would reject the choices; the median of the
    per-round ratios (0.9) keeps them."""
    from tensorkiln.autotune import tuner

    def fake_sweep(program, inputs, registry, todo, rounds, *a):  # type: ignore[no-untyped-def]
        inc = {i: tuner._default_tactic(program.steps[i].node) for i in todo}
        return {(i, t): ([1.0] * 6 if t == inc[i] else [0.5] * 6 if t == "aten-nhwc" else [2.0] * 6)
                for i, tacs in todo.items() for t in tacs}

    def fake_time(progs, inputs, rounds, budget_s=0.0):  # type: ignore[no-untyped-def]
        assert len(progs) == 2  # heuristic, per-layer choices
        return [[10.0, 30.0, 30.0, 10.0, 10.0], [9.0, 27.0, 27.0, 27.0, 27.0]]

    monkeypatch.setattr(tuner, "_sweep", fake_sweep)
    monkeypatch.setattr(tuner, "_time_programs", fake_time)
    e = tensorkiln.build(conv_model(), timing_cache=str(tmp_path / "t.json"))
    rec = next(r for r in e.tuning if r["op"] == "tensorkiln::FusedConv")
    assert rec["chosen"] == "aten-nhwc" and "note" not in rec


def test_few_channel_convolutions_default_to_kernel_rows() -> None:
    """A 3-channel 3x3 convolution: the heuristic is rows-nhwc (the direct kernel over kernel rows of a
    zero-bordered NHWC copy); im2col-nhwc is offered too."""
    from tensorkiln.backends.cpu.native import directconv

    if not directconv.available():
        pytest.skip("native kernels unavailable here")
    from tensorkiln.autotune.tuner import _default_tactic
    from tensorkiln.backends.cpu.ops_fused import tactics_for

    e = tensorkiln.build(conv_model(), opt_level=0)
    step = next(s for s in e._program.steps if s.node.op_type == "FusedConv")
    assert _default_tactic(step.node) == "rows-nhwc" and callable(getattr(step.kernel, "plan", None))
    assert {"rows-nhwc", "im2col-nhwc"} <= set(tactics_for(step.node))
    np.testing.assert_allclose(e.run({"x": X})["y"], tensorkiln.build(conv_model(), optimize=False).run({"x": X})["y"],
                               rtol=1e-4, atol=1e-4)
