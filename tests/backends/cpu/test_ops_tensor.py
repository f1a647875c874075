"""Shape/layout CPU kernels (ops_tensor, ops_layout): tricky ONNX semantics.

numpy (or onnxruntime where numpy has no twin) is the reference. Each test builds a
small model at a chosen opset; inputs given as ``Const`` become initializers, so both
the factory's constant path and the per-call dynamic path get exercised.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorkiln
from tests.backends.cpu import util
from tests.backends.cpu.util import Const, same


def run_node(op: str, args: list[Any], opset: int = 18, n_out: int = 1, **attrs: Any) -> Any:
    return util.run_node(op, args, opset, n_out, **attrs)


I64 = np.int64
X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


# ---------------------------------------------------------------------------- Reshape


def _dynamic_reshape_model(scalar_index: bool) -> Any:
    """Shape -> Gather -> (Unsqueeze) -> Concat -> Reshape with a symbolic batch."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i0"], ["n"], axis=0)]
    if scalar_index:
        nodes.append(helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]))
    nodes += [
        helper.make_node("Concat", ["n1" if scalar_index else "n", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0 if scalar_index else [0], I64), "i0"),
        numpy_helper.from_array(np.array([0], I64), "ax0"),
        numpy_helper.from_array(np.array([-1], I64), "minus1"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])],
        initializer=inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("scalar_index", [True, False])
def test_reshape_dynamic_shape_subgraph(scalar_index: bool) -> None:
    eng = tensorkiln.build(_dynamic_reshape_model(scalar_index))
    for n in (1, 5):
        x = np.random.default_rng(n).standard_normal((n, 3, 4)).astype(np.float32)
        same(eng.run({"x": x})["y"], x.reshape(n, 12))


@pytest.mark.parametrize("const", [True, False])
def test_reshape_zero_copies_and_minus_one_infers(const: bool) -> None:
    shape = np.array([0, -1], I64)
    got = run_node("Reshape", [X, Const(shape) if const else shape])
    same(got, X.reshape(2, 12))


def test_reshape_allowzero_keeps_literal_zero() -> None:
    x = np.zeros((0, 4), np.float32)
    same(run_node("Reshape", [x, np.array([4, 0], I64)], opset=14, allowzero=1), np.zeros((4, 0), np.float32))
    # without allowzero a 0 copies the input dim
    same(run_node("Reshape", [x, np.array([0, 4], I64)], opset=14), np.zeros((0, 4), np.float32))


def test_flatten_negative_axis() -> None:
    same(run_node("Flatten", [X], axis=-1), X.reshape(6, 4))
    same(run_node("Flatten", [X], axis=0), X.reshape(1, 24))


# ---------------------------------------------------------------------------- Squeeze / Unsqueeze / Split


def test_squeeze_unsqueeze_attr_and_input_forms() -> None:
    x = np.ones((1, 3, 1, 2), np.float32)
    same(run_node("Squeeze", [x], opset=11, axes=[0, -2]), np.ones((3, 2), np.float32))
    same(run_node("Squeeze", [x, np.array([2], I64)], opset=13), np.ones((1, 3, 2), np.float32))
    same(run_node("Squeeze", [x], opset=13), np.ones((3, 2), np.float32))
    y = np.ones((3, 2), np.float32)
    same(run_node("Unsqueeze", [y], opset=11, axes=[0, 3]), np.ones((1, 3, 2, 1), np.float32))
    same(run_node("Unsqueeze", [y, np.array([-1, 1], I64)], opset=13), np.ones((3, 1, 2, 1), np.float32))


def test_split_forms() -> None:
    x = np.arange(7, dtype=np.float32)
    a, b = run_node("Split", [x], opset=11, n_out=2, split=[3, 4])
    same(a, x[:3])
    same(b, x[3:])
    a, b = run_node("Split", [x, np.array([5, 2], I64)], opset=13, n_out=2)
    same(b, x[5:])
    parts = run_node("Split", [x], opset=18, n_out=4, num_outputs=4)
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5], [6]]


# ---------------------------------------------------------------------------- Pad


def _np_pad(x: np.ndarray, pads: list[int], mode: str, value: float = 0.0) -> np.ndarray:
    r = x.ndim
    pos = [(max(pads[i], 0), max(pads[r + i], 0)) for i in range(r)]
    kw = {"constant_values": value} if mode == "constant" else {}
    y = np.pad(x, pos, mode=mode, **kw)
    sl = tuple(slice(-min(pads[i], 0), y.shape[i] + min(pads[r + i], 0)) for i in range(r))
    return y[sl]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [[1, 2, 3, 0], [0, -1, 2, 1], [4, 5, 6, 7]])
def test_pad_modes_match_numpy(mode: str, pads: list[int]) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    if mode == "reflect" and max(pads) >= 3:
        pads = [min(p, 2) for p in pads]  # numpy and ONNX agree on single reflections
    got = run_node("Pad", [x, np.array(pads, I64), np.array(1.5, np.float32)], opset=19, mode=mode)
    np.testing.assert_array_equal(got, _np_pad(x, pads, mode, 1.5))


def test_pad_axes_input_and_legacy_attrs() -> None:
    x = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    got = run_node("Pad", [x, Const(np.array([1, 2], I64)), None, Const(np.array([-1], I64))], opset=18)
    same(got, np.pad(x, [(0, 0), (0, 0), (1, 2)]))
    got = run_node("Pad", [x], opset=2, pads=[0, 1, 0, 0, 1, 0], mode="edge")
    same(got, np.pad(x, [(0, 0), (1, 1), (0, 0)], mode="edge"))
    b = np.array([[True, False]])
    same(run_node("Pad", [b, Const(np.array([0, 1, 0, 1], I64))], opset=13), np.pad(b, [(0, 0), (1, 1)]))


# ---------------------------------------------------------------------------- misc shape ops


def test_expand_tile_shape_size() -> None:
    x = np.arange(3, dtype=np.float32).reshape(3, 1)
    same(run_node("Expand", [x, np.array([2, 1, 4], I64)]), np.broadcast_to(x, (2, 3, 4)))
    same(run_node("Tile", [x, Const(np.array([2, 3], I64))]), np.tile(x, (2, 3)))
    same(run_node("Shape", [X], opset=15, start=-2), np.array([3, 4], I64))
    same(run_node("Shape", [X], opset=15, start=1, end=-1), np.array([3], I64))
    same(run_node("Size", [X]), np.array(24, I64))


def test_constant_of_shape_range_eyelike() -> None:
    v = numpy_helper.from_array(np.array([7], np.int32))
    same(run_node("ConstantOfShape", [np.array([2, 3], I64)], value=v), np.full((2, 3), 7, np.int32))
    same(run_node("ConstantOfShape", [np.array([], I64)]), np.zeros((), np.float32))
    same(run_node("Range", [np.array(10, I64), np.array(1, I64), np.array(-3, I64)]), np.array([10, 7, 4], I64))
    got = run_node("Range", [np.array(0.5, np.float32), np.array(2, np.float32), np.array(0.5, np.float32)])
    same(got, np.array([0.5, 1.0, 1.5], np.float32))
    same(run_node("EyeLike", [np.zeros((3, 4), np.int32)], k=1), np.eye(3, 4, k=1, dtype=np.int32))
    same(run_node("EyeLike", [np.zeros((2, 2), np.int32)], dtype=TensorProto.FLOAT), np.eye(2, dtype=np.float32))


def test_trilu_with_k_and_batches() -> None:
    x = np.arange(2 * 3 * 4, dtype=np.int64).reshape(2, 3, 4)
    same(run_node("Trilu", [x, np.array(1, I64)], opset=14), np.triu(x, 1))
    same(run_node("Trilu", [x], opset=14, upper=0), np.tril(x))
    same(run_node("Trilu", [x, Const(np.array(-1, I64))], opset=14, upper=0), np.tril(x, -1))


def test_center_crop_pad_odd_differences() -> None:
    x = np.arange(5 * 4, dtype=np.float32).reshape(5, 4)
    got = run_node("CenterCropPad", [x, np.array([2, 7], I64)])
    want = np.zeros((2, 7), np.float32)
    want[:, 1:5] = x[1:3]
    same(got, want)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_space_round_trip(mode: str) -> None:
    x = np.random.default_rng(0).standard_normal((2, 8, 3, 5)).astype(np.float32)
    y = run_node("DepthToSpace", [x], opset=13, blocksize=2, mode=mode)
    assert y.shape == (2, 2, 6, 10)
    if mode == "CRD":  # CRD matches pixel_shuffle ordering: y[:, c, h*b+i, w*b+j] = x[:, c*4+i*2+j, h, w]
        assert y[1, 1, 3, 5] == x[1, 1 * 4 + 1 * 2 + 1, 1, 2]
    else:  # DCR: x[:, (i*2+j)*C' + c, h, w]
        assert y[1, 1, 3, 5] == x[1, (1 * 2 + 1) * 2 + 1, 1, 2]
    back = run_node("SpaceToDepth", [y], opset=25 if mode == "CRD" else 13, blocksize=2, mode=mode)
    same(back, x)


def test_reverse_sequence_both_layouts() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)  # time-major
    lens = np.array([4, 1, 2], I64)
    want = x.copy()
    for b, n in enumerate(lens):
        want[:n, b] = x[:n, b][::-1]
    same(run_node("ReverseSequence", [x, lens], time_axis=0, batch_axis=1), want)
    same(run_node("ReverseSequence", [x.T.copy(), lens], time_axis=1, batch_axis=0), want.T)


def test_concat_negative_axis_and_int_types() -> None:
    a = np.arange(6, dtype=np.int8).reshape(2, 3)
    same(run_node("Concat", [a, a, Const(a)], axis=-1), np.concatenate([a, a, a], axis=-1))


def test_pad_torch_fast_path_equals_index_path() -> None:
    import torch

    from tensorkiln.backends.cpu import ops_layout

    rng = np.random.default_rng(0)
    used = 0
    for shape in [(5,), (2, 5), (2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 4, 5)]:
        x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        for mode in ("reflect", "edge", "wrap"):
            for _ in range(6):
                widths = [(0, 0)] * len(shape)
                for a in range(max(0, len(shape) - 3), len(shape)):
                    widths[a] = (int(rng.integers(0, shape[a] + 1)), int(rng.integers(0, shape[a] + 1)))
                fast = ops_layout._torch_pad(x, widths, mode)
                if fast is None:
                    continue
                used += 1
                slow = x
                for a, (b, e) in enumerate(widths):
                    if b or e:
                        slow = slow.index_select(a, ops_layout._pad_index(mode, slow.shape[a], b, e))
                assert torch.equal(fast, slow), (shape, mode, widths)
    assert used > 20
