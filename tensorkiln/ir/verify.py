"""Graph verifier: structural invariants every pass must keep."""

from __future__ import annotations

from tensorkiln.errors import InternalError
from tensorkiln.ir.graph import Graph, Value


def verify(graph: Graph, outer: set[int] | None = None) -> None:
    """Raise ``InternalError`` when ``graph`` breaks an invariant.

    Checks: nodes are in topological order, every input is defined before use (by a
    graph input, a constant, a capture or an earlier node), each value has one producer,
    use lists match the node inputs, graph outputs are defined.
    """
    defined: set[int] = set(outer or set())
    for v in [*graph.inputs, *graph.constants.values(), *graph.captures]:
        defined.add(id(v))
    produced: set[int] = set()
    for node in graph.nodes:
        for i, v in enumerate(node.inputs):
            if v is None:
                continue
            if id(v) not in defined:
                raise InternalError(
                    f"graph {graph.name!r}: node {node.name!r} ({node.op_type}) input {i} "
                    f"{v.name!r} is used before it is defined"
                )
            if not any(n is node and j == i for (n, j) in v.uses):
                raise InternalError(f"value {v.name!r} lacks the use by node {node.name!r}")
        for sg in node.subgraphs.values():
            verify(sg, defined)
        for v in node.outputs:
            if id(v) in produced:
                raise InternalError(f"value {v.name!r} is produced twice")
            if v.producer is not node:
                raise InternalError(f"value {v.name!r} has a stale producer")
            produced.add(id(v))
            defined.add(id(v))
    for o in graph.outputs:
        if id(o) not in defined:
            raise InternalError(f"graph {graph.name!r}: output {o.name!r} is never defined")


def check_value(v: Value) -> None:
    if v.const is not None and v.shape is not None and tuple(v.const.shape) != tuple(v.shape):
        raise InternalError(f"constant {v.name!r} shape mismatch")
