"""Small pattern-matching helpers for rewrite rules."""

from __future__ import annotations

import numpy as np

from tensorkiln.ir import Graph, Node, Value


def is_op(node: Node | None, *ops: str) -> bool:
    return node is not None and node.domain == "" and node.op_type in ops


def scalar(v: Value | None) -> float | None:
    """The value of a constant holding one number (any shape with one element)."""
    if v is None or v.const is None or v.const.size != 1 or v.const.dtype == object:
        return None
    return float(np.asarray(v.const).reshape(-1)[0])


def other_input(node: Node, v: Value) -> Value | None:
    """For a binary node reading ``v``, its other input."""
    a, b = node.inputs[0], node.inputs[1]
    if a is v:
        return b
    if b is v:
        return a
    return None


def only_reader(graph: Graph, v: Value) -> Node | None:
    if any(o is v for o in graph.outputs) or len(v.uses) != 1:
        return None
    return v.uses[0][0]


def readers(v: Value) -> list[Node]:
    return [n for n, _ in v.uses]


def close(a: float | None, b: float, tol: float = 1e-4) -> bool:
    return a is not None and abs(a - b) <= tol * max(1.0, abs(b))


def splice(graph: Graph, absorbed: list[Node], new: Node) -> None:
    """Replace the nodes ``absorbed`` (whose internal values have no other readers) by ``new``,
    placed where the last absorbed node was. ``new.outputs`` are values of absorbed nodes."""
    pos = max(graph.nodes.index(n) for n in absorbed)
    before = sum(1 for n in absorbed if graph.nodes.index(n) <= pos)
    for n in absorbed:
        graph.remove_node(n)
    graph.nodes.insert(pos - before + 1, new)
    for i, v in enumerate(new.inputs):
        if v is not None:
            v.uses.append((new, i))
    for v in new.outputs:
        v.producer = new
