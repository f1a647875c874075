"""Common-subexpression elimination and reshape/transpose/squeeze chain collapsing.

# before -> after:  a = F(x); b = F(x)            ->  a = F(x); (b's readers read a)
# before -> after:  y = Reshape(Reshape(x, s1), s2)  ->  y = Reshape(x, s2)
# before -> after:  y = Transpose(Transpose(x, p1), p2)  ->  y = Transpose(x, p1∘p2)  (or x)
# before -> after:  y = Unsqueeze/Squeeze/Flatten chains ending in a constant-shape Reshape
"""

from __future__ import annotations

import json

import numpy as np

from tensorkiln.ir import Graph, Node, Value
from tensorkiln.passes.rewrite import RuleReport

# ops whose result depends only on inputs and attributes (no randomness, no state)
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
                     "Multinomial", "Dropout"}


def _key(node: Node) -> str | None:
    if node.op_type in _NONDETERMINISTIC or node.subgraphs:
        return None
    try:
        attrs = json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in node.attrs.items()},
                           sort_keys=True, default=str)
    except (TypeError, ValueError):
        return None
    ins = ",".join("-" if v is None else str(id(v)) for v in node.inputs)
    return f"{node.domain}::{node.op_type}({ins}){attrs}#{len(node.outputs)}"


def run_cse(graph: Graph, report: RuleReport) -> bool:
    seen: dict[str, Node] = {}
    changed = False
    for node in list(graph.nodes):
        k = _key(node)
        if k is None:
            continue
        first = seen.get(k)
        if first is None:
            seen[k] = node
            continue
        if any(o is v for o in graph.outputs for v in node.outputs):
            report.reject(node, "its outputs are graph outputs")
            continue
        graph.remove_node(node)
        for old, new in zip(node.outputs, first.outputs):
            graph.replace_all_uses(old, new)
        first.origin = [*first.origin, *node.origin]
        report.fired += 1
        changed = True
    return changed


def _const_ints(v: Value | None) -> list[int] | None:
    if v is None or v.const is None:
        return None
    return [int(x) for x in np.asarray(v.const).reshape(-1)]


def _only_reader(graph: Graph, v: Value) -> bool:
    return len(v.uses) == 1 and not any(o is v for o in graph.outputs)


def run_collapse(graph: Graph, report: RuleReport) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node not in graph.nodes or node.domain != "":
            continue
        x = node.inputs[0] if node.inputs else None
        if x is None or x.producer is None or x.producer.domain != "" or not _only_reader(graph, x):
            continue
        p = x.producer
        if node.op_type == "Reshape" and p.op_type in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
            target = _const_ints(node.inputs[1] if len(node.inputs) > 1 else None)
            if target is None or 0 in target or int(node.attrs.get("allowzero", 0)):
                report.reject(node, "target shape is not a constant without 0 (copy-dim) entries")
                continue
            _bypass(graph, node, p)
        elif node.op_type == "Transpose" and p.op_type == "Transpose":
            p1, p2 = p.attrs.get("perm"), node.attrs.get("perm")
            if p1 is None or p2 is None:
                report.reject(node, "Transpose without an explicit perm")
                continue
            node.attrs["perm"] = [int(p1[i]) for i in p2]
            _bypass(graph, node, p)
        else:
            continue
        node.origin = [*p.origin, *node.origin]
        report.fired += 1
        changed = True
    for node in list(graph.nodes):  # Transpose with the identity permutation
        if node.domain == "" and node.op_type == "Transpose" and node.attrs.get("perm") is not None and \
                list(node.attrs["perm"]) == list(range(len(node.attrs["perm"]))):
            src, out = node.inputs[0], node.outputs[0]
            if src is None or any(o is out for o in graph.outputs):
                continue
            graph.remove_node(node)
            graph.replace_all_uses(out, src)
            report.fired += 1
            changed = True
    return changed


def _bypass(graph: Graph, node: Node, producer: Node) -> None:
    """``node`` reads ``producer``'s input directly; ``producer`` (now unread) is removed."""
    src = producer.inputs[0]
    old = node.inputs[0]
    assert old is not None and src is not None
    old.uses = [(n, i) for (n, i) in old.uses if n is not node]
    node.inputs[0] = src
    src.uses.append((node, 0))
    if not old.uses:
        graph.remove_node(producer)
