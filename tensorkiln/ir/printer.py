"""Readable text form of a graph, one line per node."""

from __future__ import annotations

from tensorkiln.ir.graph import Graph, Node


def _fmt_attr(v: object) -> str:
    import numpy as np

    if isinstance(v, np.ndarray):
        return f"tensor<{v.dtype}{list(v.shape)}>"
    if isinstance(v, (list, tuple)) and len(v) > 8:
        return f"[{', '.join(map(str, v[:8]))}, ...]"
    return repr(v)


def format_node(node: Node, indent: str = "") -> list[str]:
    outs = ", ".join(f"%{o.name}: {o.type_str()}" for o in node.outputs)
    ins = ", ".join("_" if i is None else f"%{i.name}" for i in node.inputs)
    attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(node.attrs.items()))
    line = f"{indent}{outs} = {node.qualified_op}({ins})"
    if attrs:
        line += f" {{{attrs}}}"
    if node.name:
        line += f"  # {node.name}"
    lines = [line]
    for key, sg in node.subgraphs.items():
        lines.append(f"{indent}  {key}:")
        lines.extend(format_graph(sg, indent + "    ").splitlines())
    return lines


def format_graph(graph: Graph, indent: str = "") -> str:
    lines = [f"{indent}graph {graph.name}("]
    for v in graph.inputs:
        lines.append(f"{indent}  %{v.name}: {v.type_str()}")
    if graph.captures:
        lines.append(f"{indent}  captures: " + ", ".join(f"%{v.name}" for v in graph.captures))
    lines.append(f"{indent}) constants={len(graph.constants)} {{")
    for n in graph.nodes:
        lines.extend(format_node(n, indent + "  "))
    lines.append(f"{indent}  return " + ", ".join(f"%{o.name}" for o in graph.outputs))
    lines.append(f"{indent}}}")
    return "\n".join(lines)
