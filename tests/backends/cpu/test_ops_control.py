"""If / Loop / Scan kernels against onnxruntime, with values captured from outer scopes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tensorkiln
from tests.backends.cpu import util

ort = pytest.importorskip("onnxruntime")

F, I64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def vi(name: str, dt: int, shape: list[object] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dt, shape)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto] | None = None,
           opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "main", inputs, outputs, inits or [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return util.compare_model(model, feeds, optimize=True, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- If


def _if_model() -> onnx.ModelProto:
    # then: x + w (w an initializer of the main graph), else: concat(x, y) (different shape)
    then_g = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["t_out"])], "then", [], [vi("t_out", F, None)]
    )
    else_g = helper.make_graph(
        [helper.make_node("Concat", ["x", "y"], ["e_out"], axis=0)], "else", [], [vi("e_out", F, None)]
    )
    node = helper.make_node("If", ["c"], ["out"], then_branch=then_g, else_branch=else_g)
    w = onnx.numpy_helper.from_array(np.arange(3, dtype=np.float32), "w")
    return _model([node], [vi("c", BOOL, []), vi("x", F, [3]), vi("y", F, [3])], [vi("out", F, None)], [w])


@pytest.mark.parametrize("cond", [True, False])
def test_if_captures_and_branch_shapes(cond: bool) -> None:
    feeds = {"c": np.array(cond), "x": np.array([1, 2, 3], np.float32), "y": np.ones(3, np.float32)}
    got = _check(_if_model(), feeds)
    assert got["out"].shape == ((3,) if cond else (6,))


def test_if_constant_branch_output_is_not_shared() -> None:
    k = onnx.numpy_helper.from_array(np.array([5.0, 6.0], np.float32), "k")
    then_g = helper.make_graph([], "then", [], [vi("k", F, [2])], [k])
    else_g = helper.make_graph([helper.make_node("Neg", ["k2"], ["n"])], "else", [], [vi("n", F, [2])],
                               [onnx.numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "k2")])
    node = helper.make_node("If", ["c"], ["out"], then_branch=then_g, else_branch=else_g)
    eng = tensorkiln.build(_model([node], [vi("c", BOOL, [])], [vi("out", F, None)]))
    a = eng.run({"c": np.array(True)})["out"]
    a[:] = 0  # the caller may write to what it got back
    np.testing.assert_array_equal(eng.run({"c": np.array(True)})["out"], [5.0, 6.0])


# --------------------------------------------------------------------------- Loop


def _loop_model(with_m: bool, with_cond: bool) -> onnx.ModelProto:
    """acc += x * i (x captured), stop when sum(acc) > limit (limit captured inside a nested If),
    scan output: acc at each step."""
    nested_then = helper.make_graph(
        [helper.make_node("Greater", ["total", "limit"], ["stop"]),
         helper.make_node("Not", ["stop"], ["go"])],
        "then", [], [vi("go", BOOL, [])])
    nested_else = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["same"])], "else", [], [vi("same", BOOL, [])])
    body = helper.make_graph(
        [
            helper.make_node("Cast", ["i"], ["fi"], to=F),
            helper.make_node("Mul", ["x", "fi"], ["xi"]),
            helper.make_node("Add", ["acc", "xi"], ["acc_new"]),
            helper.make_node("ReduceSum", ["acc_new"], ["total"], keepdims=0),
            helper.make_node("If", ["use_limit"], ["cond_out"], then_branch=nested_then,
                             else_branch=nested_else),
        ],
        "body",
        [vi("i", I64, []), vi("cond_in", BOOL, []), vi("acc", F, [2])],
        [vi("cond_out", BOOL, []), vi("acc_new", F, [2]), vi("total", F, [])],
    )
    ins = ["M" if with_m else "", "cond" if with_cond else "", "acc0"]
    node = helper.make_node("Loop", ins, ["acc_final", "totals"], body=body)
    inputs = [vi("x", F, [2]), vi("acc0", F, [2]), vi("limit", F, []), vi("use_limit", BOOL, [])]
    if with_m:
        inputs.append(vi("M", I64, []))
    if with_cond:
        inputs.append(vi("cond", BOOL, []))
    return _model([node], inputs, [vi("acc_final", F, None), vi("totals", F, None)])


@pytest.mark.parametrize(
    ("with_m", "with_cond", "m", "cond", "use_limit"),
    [
        (True, False, 4, None, False),
        (True, True, 6, True, True),
        (False, True, None, True, True),
        (True, True, 0, True, False),  # zero iterations
        (True, True, 5, False, False),  # cond false at the start
    ],
)
def test_loop(with_m: bool, with_cond: bool, m: int | None, cond: bool | None, use_limit: bool) -> None:
    feeds = {
        "x": np.array([1.0, 0.5], np.float32),
        "acc0": np.array([0.0, 1.0], np.float32),
        "limit": np.array(9.0, np.float32),
        "use_limit": np.array(use_limit),
    }
    if with_m:
        feeds["M"] = np.array(m, np.int64)
    if with_cond:
        feeds["cond"] = np.array(cond)
    model = _loop_model(with_m, with_cond)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)
    got = tensorkiln.build(model).run(feeds)
    np.testing.assert_allclose(got["acc_final"], ref[0])
    assert got["totals"].shape[0] == ref[1].shape[0]
    np.testing.assert_allclose(got["totals"].reshape(-1), ref[1].reshape(-1))
    assert got["totals"].dtype == np.float32


def test_loop_carried_value_changes_shape() -> None:
    body = helper.make_graph(
        [helper.make_node("Concat", ["v", "one"], ["v2"], axis=0),
         helper.make_node("Identity", ["c"], ["c2"])],
        "body", [vi("i", I64, []), vi("c", BOOL, []), vi("v", F, [None])],
        [vi("c2", BOOL, []), vi("v2", F, [None])],
        [onnx.numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    node = helper.make_node("Loop", ["M", "", "v0"], ["vf"], body=body)
    model = _model([node], [vi("M", I64, []), vi("v0", F, [1])], [vi("vf", F, None)])
    _check(model, {"M": np.array(3, np.int64), "v0": np.zeros(1, np.float32)})


# --------------------------------------------------------------------------- Scan


@pytest.mark.parametrize(
    ("in_axes", "in_dirs", "out_axes", "out_dirs"),
    [
        ([0, 0], [0, 0], [0], [0]),
        ([1, -1], [1, 0], [1], [1]),
        ([0, 1], [0, 1], [-1], [0]),
    ],
)
def test_scan_axes_directions(in_axes: list[int], in_dirs: list[int], out_axes: list[int],
                              out_dirs: list[int]) -> None:
    # state s [2]; scan inputs a, b slices [2]: s' = s + a*b + w (w captured), out = s' * 2
    body = helper.make_graph(
        [helper.make_node("Mul", ["a", "b"], ["ab"]),
         helper.make_node("Add", ["s", "ab"], ["s1"]),
         helper.make_node("Add", ["s1", "w"], ["s2"]),
         helper.make_node("Add", ["s2", "s2"], ["o"])],
        "body", [vi("s", F, [2]), vi("a", F, [2]), vi("b", F, [2])],
        [vi("s2", F, [2]), vi("o", F, [2])],
    )
    node = helper.make_node("Scan", ["s0", "A", "B"], ["sf", "O"], body=body, num_scan_inputs=2,
                            scan_input_axes=in_axes, scan_input_directions=in_dirs,
                            scan_output_axes=out_axes, scan_output_directions=out_dirs)
    rng = np.random.default_rng(0)
    a_shape = [4, 2] if in_axes[0] == 0 else [2, 4]
    b_shape = [4, 2] if in_axes[1] == 0 else [2, 4]
    feeds = {
        "s0": rng.standard_normal(2).astype(np.float32),
        "A": rng.standard_normal(a_shape).astype(np.float32),
        "B": rng.standard_normal(b_shape).astype(np.float32),
        "w": rng.standard_normal(2).astype(np.float32),
    }
    model = _model([node], [vi("s0", F, [2]), vi("A", F, a_shape), vi("B", F, b_shape), vi("w", F, [2])],
                   [vi("sf", F, None), vi("O", F, None)])
    _check(model, feeds)


def test_scan_opset8_batch() -> None:
    body = helper.make_graph(
        [helper.make_node("Add", ["s", "a"], ["s2"]), helper.make_node("Identity", ["s2"], ["o"])],
        "body", [vi("s", F, [2]), vi("a", F, [2])], [vi("s2", F, [2]), vi("o", F, [2])],
    )
    node = helper.make_node("Scan", ["", "s0", "A"], ["sf", "O"], body=body, num_scan_inputs=1,
                            directions=[1])
    model = _model([node], [vi("s0", F, [3, 2]), vi("A", F, [3, 4, 2])],
                   [vi("sf", F, None), vi("O", F, None)], opset=8)
    rng = np.random.default_rng(1)
    _check(model, {"s0": rng.standard_normal((3, 2)).astype(np.float32),
                   "A": rng.standard_normal((3, 4, 2)).astype(np.float32)})


# ------------------------------------------------- captures after graph rewrites


def test_captured_value_replaced_by_identity_elimination() -> None:
    """Outer ``xi = Identity(x)`` read by both branches and by an If nested in a Loop:
    the cleanup pass replaces xi by x everywhere, and the bodies still get it."""
    then_g = helper.make_graph([helper.make_node("Add", ["xi", "y"], ["t"])], "then", [],
                               [vi("t", F, None)])
    else_g = helper.make_graph([helper.make_node("Sub", ["y", "xi"], ["e"])], "else", [],
                               [vi("e", F, None)])
    inner_then = helper.make_graph([helper.make_node("Add", ["acc", "xi"], ["a1"])], "it", [],
                                   [vi("a1", F, None)])
    inner_else = helper.make_graph([helper.make_node("Mul", ["acc", "xi"], ["a2"])], "ie", [],
                                   [vi("a2", F, None)])
    body = helper.make_graph(
        [helper.make_node("If", ["c"], ["acc2"], then_branch=inner_then, else_branch=inner_else),
         helper.make_node("Identity", ["cin"], ["cout"])],
        "body", [vi("i", I64, []), vi("cin", BOOL, []), vi("acc", F, [3])],
        [vi("cout", BOOL, []), vi("acc2", F, [3])],
    )
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"]),
        helper.make_node("If", ["c"], ["out"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["M", "", "y"], ["looped"], body=body),
    ]
    model = _model(nodes, [vi("c", BOOL, []), vi("x", F, [3]), vi("y", F, [3]), vi("M", I64, [])],
                   [vi("out", F, None), vi("looped", F, None)])
    for c in (True, False):
        _check(model, {"c": np.array(c), "x": np.arange(3, dtype=np.float32),
                       "y": np.full(3, 2.0, np.float32), "M": np.array(3, np.int64)})
