"""The chain executor: runs of native steps planned once per input signature, replayed in one call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import tensorkiln
from tensorkiln.backends.cpu import chain
from tensorkiln.backends.cpu.chain import Chain, _Buf, _first_fit, _Plan
from tensorkiln.backends.cpu.native import directconv
from tensorkiln.backends.cpu.program import Step
from tensorkiln.errors import KernelError
from tensorkiln.ir import Node

pytestmark = pytest.mark.skipif(not (directconv.available() and chain.enabled()),
                                reason="native kernels or the chain executor are unavailable here")
CL = torch.channels_last


def _model() -> onnx.ModelProto:
    """conv3x3+relu = a -> conv3x3+relu -> conv3x3 + a (a dies there) -> relu = s (an output) -> max
    pool -> conv1x1+relu = y."""
    rng = np.random.default_rng(3)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [numpy_helper.from_array(w(16, 16, 3, 3), "W0"), numpy_helper.from_array(w(16), "B0"),
             numpy_helper.from_array(w(16, 16, 3, 3), "W1"), numpy_helper.from_array(w(16), "B1"),
             numpy_helper.from_array(w(16, 16, 3, 3), "W2"), numpy_helper.from_array(w(16), "B2"),
             numpy_helper.from_array(w(24, 16, 1, 1), "W3"), numpy_helper.from_array(w(24), "B3")]
    nodes = [helper.make_node("Conv", ["x", "W0", "B0"], ["a0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a0"], ["a"]),
             helper.make_node("Conv", ["a", "W1", "B1"], ["b0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["b0"], ["b"]),
             helper.make_node("Conv", ["b", "W2", "B2"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "a"], ["sum"]), helper.make_node("Relu", ["sum"], ["s"]),
             helper.make_node("MaxPool", ["s"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "W3", "B3"], ["d"]), helper.make_node("Relu", ["d"], ["y"])]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 10, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _feed(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((n, 16, 10, 10)).astype(np.float32)}


def _direct_engine() -> tensorkiln.Engine:
    """_model() with every convolution on direct-nhwc."""
    e = tensorkiln.build(_model(), opt_level=0)
    for nd in e.graph.nodes:
        if nd.op_type == "FusedConv":
            nd.attrs["tactic"] = "direct-nhwc"
    e._lower()
    return e


def _chains(e: tensorkiln.Engine) -> list[Chain]:
    return [r for r in e._program.runs() if isinstance(r, Chain)]


def _stepwise(e: tensorkiln.Engine, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    prog = e._program
    runs = prog.runs()
    prog._runs = list(prog.steps)
    try:
        return e.run(feeds)
    finally:
        prog._runs = runs


def _check_engine(e: tensorkiln.Engine, ref: tensorkiln.Engine | None) -> None:
    for n in (1, 1, 1, 2, 2, 2, 1):  # trace, replays, a new signature (batch 2), the first one again
        feeds = _feed(n, seed=n)
        x0 = feeds["x"].copy()
        got = e.run(feeds)
        np.testing.assert_array_equal(feeds["x"], x0)  # the in-place residual never writes a feed
        want = _stepwise(e, feeds)
        for k in want:  # the same kernels on the same data: bit for bit
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        if ref is not None:
            for k, v in ref.run(feeds).items():
                np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-4, err_msg=k)


def _plans(c: Chain) -> list[_Plan]:
    """The plans of ``c`` and of the shorter chains it split into."""
    out: list[_Plan] = []
    for p in c._plans.values():
        if isinstance(p, _Plan):
            out.append(p)
        elif p is not None:
            out += [q for sub in (p[0], p[2]) if sub is not None for q in _plans(sub)]
    return out


def test_fp32_direct_convs_and_pool_run_as_one_chain() -> None:
    e = _direct_engine()
    chains = _chains(e)
    assert len(chains) == 1 and [s.node.op_type for s in chains[0].steps] == \
        ["FusedConv"] * 3 + ["MaxPool", "FusedConv"]
    _check_engine(e, tensorkiln.build(_model(), optimize=False))
    # the first conv reads the NCHW feed (a copy first): it runs from Python, the other four are one
    # plan per batch size (1, 2); the residual is written into its input, s comes out of that buffer
    # and y fresh; the 3x3 output and the pool output share the arena's bytes
    plans = _plans(chains[0])
    assert len(plans) == 2 and [p.n for p in plans] == [4, 4]
    for p in plans:
        assert [from_input for _, from_input, _, _ in p.outs] == [True, False]
        assert len(p.escapes) == 1 and 0 < p.arena <= 16 * 10 * 10 * 4 * 2


def test_winograd_runs_inside_the_chain() -> None:
    """Winograd on the two 3x3 convolutions after the first: their calls and work buffers are part
    of the plans (a constant passed as a tensor would split the chain around them)."""
    from tensorkiln.backends.cpu.native import winograd

    if not winograd.available():
        pytest.skip("native Winograd kernels unavailable here")
    e = tensorkiln.build(_model(), opt_level=0)
    convs = [nd for nd in e.graph.nodes if nd.op_type == "FusedConv"]
    for nd, tactic in zip(convs, ["direct-nhwc", "winograd-f43", "winograd-f43", "direct-nhwc"]):
        nd.attrs["tactic"] = tactic
    e._lower()
    (c,) = _chains(e)
    _check_engine(e, tensorkiln.build(_model(), optimize=False))
    # as with every conv on direct-nhwc: the first reads the NCHW feed (a copy first, from Python),
    # the other four are one plan per batch size
    assert [p.n for p in _plans(c)] == [4, 4]


def _inception() -> onnx.ModelProto:
    """x -> conv3x3+relu = a; two 1x1 convs of a (merged into one conv + SplitChannels), a 3x3 conv
    after the second, a max pool of a; Concat(1x1, 3x3, pool) along channels = y."""
    rng = np.random.default_rng(5)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [numpy_helper.from_array(w(16, 16, 3, 3), "W0"), numpy_helper.from_array(w(8, 16, 1, 1), "W1"),
             numpy_helper.from_array(w(12, 16, 1, 1), "W2"), numpy_helper.from_array(w(20, 12, 3, 3), "W3")]
    nodes = [helper.make_node("Conv", ["x", "W0"], ["a0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a0"], ["a"]),
             helper.make_node("Conv", ["a", "W1"], ["b0"]), helper.make_node("Relu", ["b0"], ["b"]),
             helper.make_node("Conv", ["a", "W2"], ["c0"]), helper.make_node("Relu", ["c0"], ["c"]),
             helper.make_node("Conv", ["c", "W3"], ["d0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["d0"], ["d"]),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["b", "d", "p"], ["y"], axis=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 10, 10])
    g = helper.make_graph(nodes, "inception", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_channel_split_and_concat_run_inside_the_chain() -> None:
    """The merged 1x1 convolution's SplitChannels (views, no call) and the Concat (one native copy)
    keep the inception block one chain: every step after the first (which reads the NCHW feed)
    is in the plan, and the results are those of the steps run one by one."""
    e = tensorkiln.build(_inception(), opt_level=0)
    ops = [s.node.op_type for s in e._program.steps]
    assert "SplitChannels" in ops and "Concat" in ops
    (c,) = _chains(e)
    assert len(c.steps) == len(ops)
    _check_engine(e, tensorkiln.build(_inception(), optimize=False))
    calls = len(ops) - 2  # the first step runs from Python; the split is a view
    assert [p.n for p in _plans(c)] == [calls, calls]
    assert all(p.calls.count(-1) == 1 for p in _plans(c))


def test_int8_chain_matches_stepwise_bit_for_bit() -> None:
    calib = [_feed(1, seed=s) for s in range(4)]
    e = tensorkiln.build(_model(), precision="int8", calibration_data=calib)
    chains = _chains(e)
    assert chains and any(s.node.op_type == "QConv" for c in chains for s in c.steps)
    _check_engine(e, None)


def test_chains_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORKILN_CHAIN", "0")
    e = tensorkiln.build(_model(), opt_level=0)
    assert not _chains(e)
    assert e.run(_feed(1))["y"].shape == (1, 24, 5, 5)


def _conv(k: int, c: int, seed: int) -> directconv.DirectConv:
    w = np.random.default_rng(seed).standard_normal((k, c, 3, 3)).astype(np.float32) / 8
    return directconv.DirectConv(w, None, [1, 1], [1, 1, 1, 1], [1, 1], "Relu", [])


def _two_step_chain(c1: directconv.DirectConv, c2: directconv.DirectConv) -> Chain:
    s1 = Step(c1, (1,), (2,), (1,), Node("FusedConv", [], [], name="first"))
    s2 = Step(c2, (2,), (3,), (2,), Node("FusedConv", [], [], name="second"))
    return Chain([s1, s2], frozenset())


def test_a_step_that_cannot_plan_runs_between_shorter_chains() -> None:
    c1, c2 = _conv(16, 8, 0), _conv(8, 16, 1)
    ch = _two_step_chain(c1, c2)
    x = torch.randn(1, 8, 6, 6)  # NCHW-contiguous: the direct kernel needs a channels-last copy
    want = c2(c1(x))
    for _ in range(3):
        env: list[torch.Tensor | None] = [None, x, None, None]
        ch.run(env)
        assert env[1] is None and env[2] is None  # freed as the steps say
        torch.testing.assert_close(env[3], want, rtol=0, atol=0)
    [(before, step, after)] = ch._plans.values()
    assert before is None and step is ch.steps[0] and after is not None and after.steps == ch.steps[1:]
    assert [p.n for p in _plans(ch)] == [1]  # the second conv: planned on the split's second run
    xc = x.contiguous(memory_format=CL)  # a channels-last input: both planned, then replayed
    for _ in range(2):
        env = [None, xc, None, None]
        ch.run(env)
        torch.testing.assert_close(env[3], want, rtol=0, atol=0)
    assert sorted(p.n for p in _plans(ch)) == [1, 2]


def test_a_failing_step_names_its_node() -> None:
    ch = _two_step_chain(_conv(16, 8, 0), _conv(8, 12, 1))  # the second expects 12 channels, gets 16
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=CL)
    with pytest.raises(KernelError, match="second"):
        ch.run([None, x, None, None])


def test_first_fit_shares_memory_only_between_disjoint_lifetimes() -> None:
    bufs = [_Buf(-1, 0, 100, 0, 1), _Buf(-1, 0, 64, 1, 2), _Buf(-1, 0, 200, 2, 3), _Buf(-1, 0, 10, 4, 4)]
    offs, size = _first_fit(list(enumerate(bufs)))
    spans = {b: (offs[b], offs[b] + (bufs[b].nbytes + 63) // 64 * 64) for b in offs}
    for a in spans:
        assert spans[a][0] % 64 == 0
        for b in spans:
            if a < b and not (bufs[a].last < bufs[b].first or bufs[b].last < bufs[a].first):
                assert spans[a][1] <= spans[b][0] or spans[b][1] <= spans[a][0], (a, b)
    # 0 and 1 overlap in time, 2 overlaps 1 only but does not fit under it, 3 is alone: reuses 0
    assert offs == {0: 0, 1: 128, 2: 192, 3: 0} and size == 448


def test_threads_share_plans_and_get_identical_results() -> None:
    import threading

    e = _direct_engine()
    feeds = [_feed(1 + i % 2, seed=i) for i in range(4)]
    want = [_stepwise(e, f) for f in feeds]
    bad: list[str] = []

    def work(i: int) -> None:
        for r in range(40):
            got = e.run(feeds[(i + r) % 4])
            for k, v in want[(i + r) % 4].items():
                if not np.array_equal(got[k], v):
                    bad.append(f"thread {i} run {r}: {k}")

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad, bad[:5]


def test_profile_times_every_step_inside_chains() -> None:
    e = _direct_engine()
    prof = e.profile(_feed(1), runs=3)
    assert [p["name"] for p in prof] == [s.node.name for s in e._program.steps]
    assert all(p["ms"] > 0 for p in prof)
    assert _plans(_chains(e)[0])  # the timed runs were replays of a plan


def test_a_view_step_inside_a_chain(tmp_path: Path) -> None:
    """The QDQ import's tail: QGlobalAveragePool → Flatten (a view: no call) → QGemm → QGemm →
    Dequantize in one chain; the Flatten's output is relocated into the pool's buffer."""
    pytest.importorskip("onnxruntime.quantization")
    from tests.passes.test_quantize_qdq import _quantize
    from tests.quant.models import images

    path, _ = _quantize(tmp_path, "qdq", True, True)
    e = tensorkiln.build(str(path))
    chains = [c for c in _chains(e) if any(s.node.op_type == "Flatten" for s in c.steps)]
    assert chains
    for n in (4, 4, 4):
        x = images(n, seed=n)
        got = e.run({"x": x})["logits"]
        np.testing.assert_array_equal(got, _stepwise(e, {"x": x})["logits"])
    views = [p for c in chains for p in _plans(c) if -1 in p.calls]
    assert views and all(p.n == len(p.calls) - 1 for p in views)  # one step without a call


def test_an_output_that_is_a_view_of_a_chain_buffer() -> None:
    """conv → conv → Flatten as the chain's last step (1x1 maps, as before a classifier: a
    channels-last [N, C, 1, 1] flattens as a view): the output is a view of the second conv's
    buffer, which therefore escapes (fresh per run), and the view is rebuilt on it."""
    from tensorkiln.backends.cpu.ops_tensor import _flatten

    c1, c2 = _conv(16, 8, 0), _conv(8, 16, 1)
    flat = _flatten(Node("Flatten", [], [], {"axis": 1}, name="flat"), None)
    steps = [Step(c1, (1,), (2,), (1,), Node("FusedConv", [], [], name="a")),
             Step(c2, (2,), (3,), (2,), Node("FusedConv", [], [], name="b")),
             Step(flat, (3,), (4,), (3,), Node("Flatten", [], [], name="flat"))]
    ch = Chain(steps, frozenset())
    x = torch.randn(2, 8, 1, 1).contiguous(memory_format=CL)
    want = flat(c2(c1(x)))
    outs = []
    for _ in range(3):
        env: list[torch.Tensor | None] = [None, x, None, None, None]
        ch.run(env)
        assert env[1] is None and env[2] is None and env[3] is None
        torch.testing.assert_close(env[4], want, rtol=0, atol=0)
        outs.append(env[4])
    [plan] = _plans(ch)
    assert plan.calls == [0, 1, -1] and len(plan.escapes) == 1 and plan.outs[0][3] is not None
    assert outs[1].data_ptr() != outs[2].data_ptr()  # a fresh output per run: earlier results stay valid
    torch.testing.assert_close(outs[1], want, rtol=0, atol=0)
