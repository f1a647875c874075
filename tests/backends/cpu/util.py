"""One-node ONNX models for the CPU kernel tests: build, run through tensorkiln, check against an oracle.

Two ways to give a node's inputs:

* named: ``[("x", array), ("w", array), ("b", None)]`` (``Inputs``); None leaves that input out,
  names listed in ``consts`` become initializers (constants the kernel factory can read);
* positional: ``[array, Const(array), None]``; named ``in0, in1, ...`` (see ``named``).

Outputs are named ``y0, y1, ...`` unless given. The oracle is onnxruntime (``"ort"``) or ONNX's
reference evaluator (``"ref"``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import tensorkiln

Inputs = list[tuple[str, np.ndarray | None]]
Oracle = Literal["ort", "ref"]


class Const:
    """A positional input given as an initializer (a constant the kernel factory can read)."""

    def __init__(self, arr: Any) -> None:
        self.arr = np.asarray(arr)


def named(args: Sequence[Any]) -> tuple[Inputs, tuple[str, ...]]:
    """Positional ``args`` as named inputs ``in0, in1, ...`` and the names that are constants.

    Arrays (or anything ``np.asarray`` takes) are fed, ``Const`` become initializers, None is absent.
    """
    inputs: Inputs = []
    consts: list[str] = []
    for i, a in enumerate(args):
        name = f"in{i}"
        if a is None:
            inputs.append((name, None))
        elif isinstance(a, Const):
            inputs.append((name, a.arr))
            consts.append(name)
        else:
            inputs.append((name, np.asarray(a)))
    return inputs, tuple(consts)


def feeds_of(inputs: Inputs, consts: Collection[str] = ()) -> dict[str, np.ndarray]:
    """The arrays to feed: present inputs that are not initializers."""
    return {n: a for n, a in inputs if a is not None and n not in consts}


def graph_model(nodes: onnx.NodeProto | Sequence[onnx.NodeProto], feeds: Mapping[str, np.ndarray],
                outputs: Sequence[str], inits: Mapping[str, np.ndarray] | None = None, *, opset: int = 17,
                domains: Mapping[str, int] | None = None, ir_version: int | None = None,
                name: str = "g") -> onnx.ModelProto:
    """A model of ``nodes`` whose graph inputs are typed from ``feeds`` and outputs are untyped."""
    if isinstance(nodes, onnx.NodeProto):
        nodes = [nodes]
    g_in = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in feeds.items()]
    g_out = [helper.make_empty_tensor_value_info(o) for o in outputs if o]
    init = [numpy_helper.from_array(a, n) for n, a in (inits or {}).items()]
    graph = helper.make_graph(list(nodes), name, g_in, g_out, initializer=init)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    model = helper.make_model(graph, opset_imports=opsets)
    if ir_version is not None:
        model.ir_version = ir_version
    return model


def single_node(op: str, inputs: Inputs, attrs: Mapping[str, Any] | None = None, *, opset: int = 17,
                n_out: int = 1, outputs: Sequence[str] | None = None, consts: Collection[str] = (),
                domain: str = "", domain_opset: int = 1) -> onnx.ModelProto:
    """A one-node model. ``outputs`` (default ``y0 .. y{n_out-1}``) may hold "" for an output left out."""
    outs = list(outputs) if outputs is not None else [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, [n if a is not None else "" for n, a in inputs], outs, domain=domain or None,
                            **(attrs or {}))
    inits = {n: a for n, a in inputs if a is not None and n in consts}
    return graph_model(node, feeds_of(inputs, consts), outs, inits, opset=opset,
                       domains={domain: domain_opset} if domain else None, name=op.lower())


def run_model(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *,
              optimize: bool = False) -> dict[str, np.ndarray]:
    """tensorkiln's outputs by name; ``optimize=False``: no graph passes, the kernel itself."""
    return tensorkiln.build(model, optimize=optimize).run(dict(feeds))


def oracle_run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], oracle: Oracle = "ort") -> list[np.ndarray]:
    """The oracle's graph outputs in order; skips the test when onnxruntime is missing."""
    if oracle == "ort":
        ort = pytest.importorskip("onnxruntime")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sess.run(None, dict(feeds))
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, dict(feeds))


def check_outputs(got: Mapping[str, np.ndarray], ref: Sequence[np.ndarray], names: Sequence[str], *,
                  rtol: float = 1e-4, atol: float = 1e-5, exact: bool = False, upcast: bool = False) -> None:
    """``got[name]`` against ``ref`` in order: same dtype and shape, then equal (``exact``) or close
    (compared as float64 when ``upcast``)."""
    for name, r in zip(names, ref):
        g = got[name]
        assert g.dtype == r.dtype, f"{name}: dtype {g.dtype} != {r.dtype}"
        assert g.shape == r.shape, f"{name}: shape {g.shape} != {r.shape}"
        if exact:
            np.testing.assert_array_equal(g, r, err_msg=name)
        elif upcast:
            np.testing.assert_allclose(g.astype(np.float64), r.astype(np.float64), rtol=rtol, atol=atol,
                                       err_msg=name)
        else:
            np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=name)


def compare_model(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *, oracle: Oracle = "ort",
                  optimize: bool = False, rtol: float = 1e-4, atol: float = 1e-5, exact: bool = False,
                  upcast: bool = False) -> dict[str, np.ndarray]:
    """Run ``model`` with tensorkiln and the oracle; every graph output must agree. Returns tensorkiln's."""
    ref = oracle_run(model, feeds, oracle)
    got = run_model(model, feeds, optimize=optimize)
    check_outputs(got, ref, [o.name for o in model.graph.output], rtol=rtol, atol=atol, exact=exact,
                  upcast=upcast)
    return got


def compare(op: str, inputs: Inputs, attrs: Mapping[str, Any] | None = None, *, opset: int = 17,
            n_out: int = 1, outputs: Sequence[str] | None = None, consts: Collection[str] = (),
            oracle: Oracle = "ort", rtol: float = 1e-4, atol: float = 1e-5,
            exact: bool = False) -> list[np.ndarray]:
    """One node through tensorkiln (no graph passes) and the oracle; tensorkiln's outputs in order."""
    model = single_node(op, inputs, attrs, opset=opset, n_out=n_out, outputs=outputs, consts=consts)
    got = compare_model(model, feeds_of(inputs, consts), oracle=oracle, rtol=rtol, atol=atol, exact=exact)
    return [got[o.name] for o in model.graph.output]


def node_outputs(op: str, inputs: Inputs, attrs: Mapping[str, Any] | None = None, *, opset: int = 17,
                 n_out: int = 1, consts: Collection[str] = (), domain: str = "", domain_opset: int = 1,
                 oracle: Oracle | None = None) -> list[np.ndarray]:
    """One node's outputs in order: tensorkiln's (no graph passes), or the ``oracle``'s when given."""
    model = single_node(op, inputs, attrs, opset=opset, n_out=n_out, consts=consts, domain=domain,
                        domain_opset=domain_opset)
    feeds = feeds_of(inputs, consts)
    if oracle is not None:
        return oracle_run(model, feeds, oracle)
    got = run_model(model, feeds)
    return [got[o.name] for o in model.graph.output]


def run_node(op: str, args: Sequence[Any], opset: int = 17, n_out: int = 1, *, optimize: bool = True,
             **attrs: Any) -> Any:
    """Run one node on positional ``args`` (see ``named``): the output, or the list of ``n_out`` outputs."""
    inputs, consts = named(args)
    model = single_node(op, inputs, attrs, opset=opset, n_out=n_out, consts=consts)
    res = run_model(model, feeds_of(inputs, consts), optimize=optimize)
    outs = [res[o.name] for o in model.graph.output]
    return outs[0] if n_out == 1 else outs


def oracle_node(op: str, args: Sequence[Any], opset: int = 17, n_out: int = 1, *, oracle: Oracle = "ref",
                **attrs: Any) -> list[np.ndarray]:
    """The oracle's outputs of one node on positional ``args`` (see ``named``)."""
    inputs, consts = named(args)
    model = single_node(op, inputs, attrs, opset=opset, n_out=n_out, consts=consts)
    return oracle_run(model, feeds_of(inputs, consts), oracle)


def rand(*shape: int, seed: int = 0, dtype: Any = np.float32) -> np.ndarray:
    """Standard normal values of ``shape`` from generator ``seed``."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def same(got: np.ndarray, want: Any) -> None:
    """``got`` equals ``want`` exactly, with the same dtype and shape."""
    want = np.asarray(want)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(got, want)
