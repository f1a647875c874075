"""Dead-code elimination: drop nodes whose outputs nobody reads.

# before -> after:  y = A(x); z = B(x) (z unused)  ->  y = A(x)
"""

from __future__ import annotations

from tensorkiln.ir import Graph


def run(graph: Graph) -> bool:
    live = {id(v) for v in graph.outputs}
    keep = []
    changed = False
    for node in reversed(graph.nodes):
        if any(id(o) in live for o in node.outputs):
            keep.append(node)
            for v in node.inputs:
                if v is not None:
                    live.add(id(v))
        else:
            changed = True
    if changed:
        keep.reverse()
        kept = {id(n) for n in keep}
        for node in graph.nodes:
            if id(node) not in kept:
                for _i, v in enumerate(node.inputs):
                    if v is not None:
                        v.uses = [(n, j) for (n, j) in v.uses if n is not node]
        graph.nodes = keep
    dead_consts = [k for k, v in graph.constants.items() if id(v) not in live]
    for k in dead_consts:
        del graph.constants[k]
    for node in graph.nodes:
        for sg in node.subgraphs.values():
            changed |= run(sg)
    return changed or bool(dead_consts)
