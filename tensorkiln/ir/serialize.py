"""IR ⇄ JSON-able dicts plus a flat dict of named numpy arrays (for safetensors).

No pickling: attributes are plain JSON values; tensors (constants and tensor-valued
attributes) go to the ``weights`` dict and are referenced by key.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tensorkiln.errors import EngineFileError
from tensorkiln.ir.dtypes import DType
from tensorkiln.ir.graph import Graph, Node, Value

_TENSOR_KEY = "$tensor"


class _Writer:
    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.values: list[dict[str, Any]] = []
        self.weights: dict[str, np.ndarray] = {}

    def vid(self, v: Value) -> int:
        k = id(v)
        if k not in self.ids:
            self.ids[k] = len(self.values)
            self.values.append({
                "name": v.name,
                "dtype": v.dtype.short if v.dtype else None,
                "shape": list(v.shape) if v.shape is not None else None,
            })
        return self.ids[k]

    def tensor(self, arr: np.ndarray, key: str) -> dict[str, str]:
        if arr.dtype == object:
            raise EngineFileError("string tensors cannot be stored in an engine file")
        self.weights[key] = np.require(arr, requirements="C")
        return {_TENSOR_KEY: key}

    def attr(self, v: Any, key: str) -> Any:
        if isinstance(v, np.ndarray):
            return self.tensor(v, key)
        if isinstance(v, list) and v and isinstance(v[0], np.ndarray):
            return [self.tensor(a, f"{key}.{i}") for i, a in enumerate(v)]
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (np.floating,)):
            return float(v)
        return v

    def graph(self, g: Graph, path: str) -> dict[str, Any]:
        consts = []
        for v in g.constants.values():
            i = self.vid(v)
            assert v.const is not None
            self.tensor(v.const, f"c{i}")
            consts.append(i)
        nodes = []
        for k, n in enumerate(g.nodes):
            npath = f"{path}.n{k}"
            nodes.append({
                "op": n.op_type,
                "domain": n.domain,
                "opset": n.opset,
                "name": n.name,
                "origin": n.origin,
                "attrs": {a: self.attr(val, f"{npath}.{a}") for a, val in n.attrs.items()},
                "inputs": [-1 if x is None else self.vid(x) for x in n.inputs],
                "outputs": [self.vid(x) for x in n.outputs],
                "subgraphs": {s: self.graph(sg, f"{npath}.{s}") for s, sg in n.subgraphs.items()},
            })
        return {
            "name": g.name,
            "inputs": [self.vid(v) for v in g.inputs],
            "captures": [self.vid(v) for v in g.captures],
            "constants": consts,
            "nodes": nodes,
            "outputs": [self.vid(v) for v in g.outputs],
            "opset_imports": g.opset_imports,
        }


def graph_to_dict(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    w = _Writer()
    body = w.graph(graph, "g")
    return {"values": w.values, "graph": body}, w.weights


class _Reader:
    def __init__(self, doc: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        self.doc = doc
        self.weights = weights
        self.objs: dict[int, Value] = {}

    def value(self, i: int) -> Value:
        if i not in self.objs:
            try:
                meta = self.doc["values"][i]
                dtype = DType.from_name(meta["dtype"]) if meta["dtype"] else None
                shape = tuple(meta["shape"]) if meta["shape"] is not None else None
                self.objs[i] = Value(str(meta["name"]), dtype, shape)
            except (IndexError, KeyError, TypeError) as e:
                raise EngineFileError(f"engine header refers to unknown value #{i}: {e}") from None
        return self.objs[i]

    def tensor(self, key: str) -> np.ndarray:
        if key not in self.weights:
            raise EngineFileError(f"engine weights lack tensor {key!r}")
        return self.weights[key]

    def attr(self, v: Any) -> Any:
        if isinstance(v, dict) and _TENSOR_KEY in v:
            return self.tensor(v[_TENSOR_KEY])
        if isinstance(v, list) and v and isinstance(v[0], dict) and _TENSOR_KEY in v[0]:
            return [self.tensor(x[_TENSOR_KEY]) for x in v]
        return v

    def graph(self, d: dict[str, Any]) -> Graph:
        g = Graph(d["name"])
        g.opset_imports = dict(d.get("opset_imports", {}))
        for i in d["inputs"]:
            g.add_input(self.value(i))
        g.captures = [self.value(i) for i in d["captures"]]
        for i in d["constants"]:
            v = self.value(i)
            v.const = self.tensor(f"c{i}")
            g.constants[v.name] = v
        for nd in d["nodes"]:
            node = Node(
                op_type=nd["op"],
                inputs=[None if i < 0 else self.value(i) for i in nd["inputs"]],
                outputs=[self.value(i) for i in nd["outputs"]],
                attrs={k: self.attr(v) for k, v in nd["attrs"].items()},
                name=nd["name"],
                domain=nd["domain"],
                opset=int(nd["opset"]),
                subgraphs={k: self.graph(s) for k, s in nd["subgraphs"].items()},
                origin=list(nd["origin"]),
            )
            g.add_node(node)
        g.outputs = [self.value(i) for i in d["outputs"]]
        return g


def graph_from_dict(doc: dict[str, Any], weights: dict[str, np.ndarray]) -> Graph:
    try:
        return _Reader(doc, weights).graph(doc["graph"])
    except EngineFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise EngineFileError(f"engine header is malformed: {type(e).__name__}: {e}") from None
