import numpy as np
import pytest

from tensorkiln.errors import InternalError
from tensorkiln.ir import DType, Graph, Node, Value, format_graph, verify


def _chain() -> tuple[Graph, Node, Node]:
    g = Graph("g")
    x = g.add_input(Value("x", DType.FLOAT32, ("n", 3)))
    c = g.add_constant("c", np.ones(3, np.float32))
    a = g.add_node(Node("Add", [x, c], [Value("a")], name="add"))
    r = g.add_node(Node("Relu", [a.outputs[0]], [Value("r")], name="relu"))
    g.outputs = [r.outputs[0]]
    return g, a, r


def test_producer_and_uses_are_linked() -> None:
    g, a, r = _chain()
    assert a.outputs[0].producer is a
    assert a.outputs[0].uses == [(r, 0)]
    assert g.inputs[0].uses == [(a, 0)]
    verify(g)


def test_verifier_rejects_use_before_definition() -> None:
    g, a, r = _chain()
    g.nodes = [r, a]
    with pytest.raises(InternalError, match="used before it is defined"):
        verify(g)


def test_verifier_rejects_undefined_output() -> None:
    g, _, _ = _chain()
    g.outputs = [Value("nowhere")]
    with pytest.raises(InternalError, match="never defined"):
        verify(g)


def test_printer_shows_types_and_ops() -> None:
    g, _, _ = _chain()
    text = format_graph(g)
    assert "%x: float32[n,3]" in text
    assert "Add(%x, %c)" in text and "Relu(%a)" in text


def test_replace_all_uses_rewires_outputs() -> None:
    g, a, r = _chain()
    g.replace_all_uses(r.outputs[0], a.outputs[0])
    assert g.outputs[0] is a.outputs[0]


def test_dtype_conversions_roundtrip() -> None:
    for dt in (DType.FLOAT32, DType.INT64, DType.BOOL, DType.FLOAT16, DType.UINT8):
        assert DType.from_numpy(dt.to_numpy()) is dt
        assert DType.from_torch(dt.to_torch()) is dt
        assert DType.from_name(dt.short) is dt
