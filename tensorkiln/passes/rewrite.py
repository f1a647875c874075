"""Helpers shared by rewrite rules: single-consumer checks, node replacement, reasons."""

from __future__ import annotations

from dataclasses import dataclass, field

from tensorkiln.ir import Graph, Node, Value


@dataclass
class RuleReport:
    """What a rule did: how many matches fired and, per non-fired candidate, why not."""

    fired: int = 0
    why_not: list[tuple[str, str]] = field(default_factory=list)  # (node name, reason)

    def reject(self, node: Node, reason: str) -> None:
        self.why_not.append((node.name, reason))


# reports of the most recent pipeline run, read by `inspect --why-not-fused`
LAST_REPORTS: dict[str, RuleReport] = {}


def sole_consumer(graph: Graph, v: Value) -> Node | None:
    """The only node reading ``v``, if ``v`` has exactly one reader and is not a graph output."""
    if any(o is v for o in graph.outputs) or len(v.uses) != 1:
        return None
    return v.uses[0][0]


def consumer_reason(graph: Graph, v: Value) -> str | None:
    if any(o is v for o in graph.outputs):
        return f"{v.name!r} is a graph output"
    if len(v.uses) != 1:
        return f"{v.name!r} has {len(v.uses)} readers"
    return None


def replace_node(graph: Graph, old: list[Node], new: Node, out_map: dict[int, Value]) -> None:
    """Put ``new`` where the first of ``old`` was, remove ``old``; ``out_map`` maps id(old value)
    to the new node's value that replaces it."""
    pos = min(graph.nodes.index(n) for n in old)
    for n in old:
        graph.remove_node(n)
    graph.nodes.insert(pos, new)
    for i, v in enumerate(new.inputs):
        if v is not None:
            v.uses.append((new, i))
    for v in new.outputs:
        v.producer = new
    for old_id, new_v in out_map.items():
        for n in old:
            for ov in n.outputs:
                if id(ov) == old_id and ov is not new_v:
                    graph.replace_all_uses(ov, new_v)
    graph.nodes = _toposort(graph)


def _toposort(graph: Graph) -> list[Node]:
    """Stable topological order (moves a fused node after all of its inputs)."""
    produced_by = {id(v): n for n in graph.nodes for v in n.outputs}
    done: set[int] = set()
    order: list[Node] = []
    visiting: set[int] = set()

    def visit(n: Node) -> None:
        if id(n) in done:
            return
        visiting.add(id(n))
        for v in n.inputs:
            if v is not None and id(v) in produced_by:
                p = produced_by[id(v)]
                if id(p) not in done and id(p) not in visiting:
                    visit(p)
        visiting.discard(id(n))
        done.add(id(n))
        order.append(n)

    for n in graph.nodes:
        visit(n)
    return order
