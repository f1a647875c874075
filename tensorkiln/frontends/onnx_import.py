"""ONNX → ir.Graph.

Handles initializers, weights held in ``Constant`` nodes, external data files, opset
versions per domain, subgraphs (If/Loop/Scan bodies with values captured from outer
scopes made explicit), and shape/type inference for intermediate values. Declared output
shapes are only shown, never trusted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from tensorkiln.errors import ModelError, UnsupportedOpError
from tensorkiln.ir import DType, Graph, Node, Value

DEFAULT_DOMAINS = ("", "ai.onnx")


def load_model(model: str | os.PathLike[str] | onnx.ModelProto | bytes) -> onnx.ModelProto:
    """Load an ONNX model from a path, bytes or a ModelProto, with clear errors."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        try:
            return onnx.load_model_from_string(bytes(model))
        except Exception as e:
            raise ModelError(f"the bytes given are not a valid ONNX model: {e}") from None
    path = Path(model)
    if not path.exists():
        raise ModelError(f"model file {str(path)!r} does not exist")
    if path.is_dir():
        raise ModelError(f"model path {str(path)!r} is a directory, expected an .onnx file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelError(
            f"{str(path)!r} is not a valid ONNX model (protobuf parse failed: {e}); "
            "expected a file written by onnx.save or torch.onnx.export"
        ) from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelError(f"{str(path)!r} holds no graph (empty or not an ONNX model)")
    _load_external(proto, path.parent)
    return proto


def _load_external(proto: onnx.ModelProto, base: Path) -> None:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    missing: dict[str, list[str]] = {}
    for t in _get_all_tensors(proto):
        if uses_external_data(t):
            info = {e.key: e.value for e in t.external_data}
            loc = info.get("location", "")
            target = (base / loc).resolve()
            if ".." in Path(loc).parts or Path(loc).is_absolute():
                raise ModelError(
                    f"tensor {t.name!r} points to external data {loc!r} outside the model's folder"
                )
            if not target.is_file():
                missing.setdefault(loc, []).append(t.name)
    if missing:
        parts = []
        for loc, names in missing.items():
            more = " …" if len(names) > 5 else ""
            parts.append(f"{loc!r} (needed by {', '.join(repr(n) for n in names[:5])}{more})")
        raise ModelError(
            f"external data file(s) missing next to the model in {str(base)!r}: "
            + "; ".join(parts)
            + ". Copy the .onnx.data file(s) beside the .onnx file."
        )
    try:
        onnx.load_external_data_for_model(proto, str(base))
    except Exception as e:
        raise ModelError(f"could not read external data for the model: {e}") from None


def _infer(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Shape/type inference on the model without its large weights (inference needs their
    shapes, not their bytes; this also keeps multi-GB models under protobuf's 2 GB limit)."""
    held: list[tuple[onnx.TensorProto, bytes]] = []
    for t in proto.graph.initializer:
        if len(t.raw_data) > 4096:
            held.append((t, t.raw_data))
            t.raw_data = b""
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception:
        return proto  # inference is advisory only; kernels do not need it
    finally:
        for t, raw in held:
            t.raw_data = raw


def _type_of(tp: onnx.TypeProto) -> tuple[DType | None, tuple[Any, ...] | None]:
    if not tp.HasField("tensor_type"):
        return None, None
    tt = tp.tensor_type
    dtype = DType.from_onnx(tt.elem_type) if tt.elem_type else None
    if not tt.HasField("shape"):
        return dtype, None
    dims: list[Any] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))  # a negative size (Paddle writes -1) means dynamic
        elif d.HasField("dim_param") and d.dim_param and d.dim_param not in ("?", "-1", "None"):
            dims.append(d.dim_param)  # "?" (Paddle) means unknown, not one shared symbol
        else:
            dims.append(None)
    return dtype, tuple(dims)


def _tensor_to_numpy(t: onnx.TensorProto, where: str) -> np.ndarray:
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:
        raise ModelError(f"cannot decode tensor {t.name!r} ({where}): {e}") from None
    if arr.dtype == object:
        return arr  # string tensors: kept, rejected later by kernels that meet them
    return np.require(arr, requirements=["C", "W", "A"])  # writable: shared with the kernels, not copied


def attr_value(a: onnx.AttributeProto, where: str) -> Any:
    """Convert an attribute to a plain Python value (graphs are handled by the caller)."""
    t = a.type
    A = onnx.AttributeProto
    if t == A.FLOAT:
        return float(a.f)
    if t == A.INT:
        return int(a.i)
    if t == A.STRING:
        return a.s.decode("utf-8", errors="replace")
    if t == A.TENSOR:
        return _tensor_to_numpy(a.t, where)
    if t == A.FLOATS:
        return [float(x) for x in a.floats]
    if t == A.INTS:
        return [int(x) for x in a.ints]
    if t == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if t == A.TENSORS:
        return [_tensor_to_numpy(x, where) for x in a.tensors]
    if t == A.SPARSE_TENSOR:
        return _sparse_to_numpy(a.sparse_tensor, where)
    if t == A.TYPE_PROTO:
        dt, _ = _type_of(a.tp)
        return dt.short if dt else None
    raise UnsupportedOpError(f"{where}: attribute {a.name!r} has unsupported type {t}")


def _sparse_to_numpy(sp: onnx.SparseTensorProto, where: str) -> np.ndarray:
    values = _tensor_to_numpy(sp.values, where)
    indices = _tensor_to_numpy(sp.indices, where)
    dense = np.zeros(tuple(sp.dims), dtype=values.dtype)
    flat = dense.reshape(-1)
    if indices.ndim == 1:
        flat[indices] = values
    else:
        flat[np.ravel_multi_index(tuple(indices.T), dense.shape)] = values
    return dense


_CONSTANT_KEYS = ("value", "value_float", "value_floats", "value_int", "value_ints",
                  "value_string", "value_strings", "sparse_value")


def _constant_node_value(node: onnx.NodeProto, where: str) -> np.ndarray:
    for a in node.attribute:
        if a.name in _CONSTANT_KEYS:
            v = attr_value(a, where)
            if a.name == "value_float":
                return np.array(v, dtype=np.float32)
            if a.name == "value_floats":
                return np.array(v, dtype=np.float32)
            if a.name in ("value_int", "value_ints"):
                return np.array(v, dtype=np.int64)
            if a.name in ("value_string", "value_strings"):
                return np.array(v, dtype=object)
            return np.asarray(v)
    raise ModelError(f"{where}: Constant node has no value attribute")


class _Importer:
    def __init__(self, proto: onnx.ModelProto) -> None:
        self.opsets: dict[str, int] = {}
        for imp in proto.opset_import:
            dom = "" if imp.domain in DEFAULT_DOMAINS else imp.domain
            self.opsets[dom] = int(imp.version)
        if "" not in self.opsets:
            self.opsets[""] = 1 if proto.ir_version < 3 else 7
        self.value_info: dict[str, onnx.TypeProto] = {}
        self.functions = {(f.domain, f.name): f for f in proto.functions}
        self._anon = 0

    def collect_value_info(self, g: onnx.GraphProto) -> None:
        for vi in [*g.value_info, *g.input, *g.output]:
            if vi.name and vi.name not in self.value_info:
                self.value_info[vi.name] = vi.type
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    self.collect_value_info(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        self.collect_value_info(sg)

    def new_value(self, name: str) -> Value:
        dtype, shape = (None, None)
        if name in self.value_info:
            dtype, shape = _type_of(self.value_info[name])
        return Value(name, dtype, shape)

    def convert_graph(
        self,
        g: onnx.GraphProto,
        scopes: list[tuple[Graph, dict[str, Value]]],
        is_main: bool,
    ) -> Graph:
        graph = Graph(g.name or "graph")
        graph.opset_imports = dict(self.opsets)
        local: dict[str, Value] = {}
        frame = (graph, local)
        chain = [*scopes, frame]

        for t in g.initializer:
            arr = _tensor_to_numpy(t, f"initializer {t.name!r}")
            local[t.name] = graph.add_constant(t.name, arr)
        for sp in g.sparse_initializer:
            arr = _sparse_to_numpy(sp, f"sparse initializer {sp.values.name!r}")
            local[sp.values.name] = graph.add_constant(sp.values.name, arr)
        for vi in g.input:
            if vi.name in local:
                continue  # an initializer listed as input (old exporters): a constant
            dtype, shape = _type_of(vi.type)
            v = Value(vi.name, dtype, shape)
            local[vi.name] = graph.add_input(v)

        def resolve(name: str, where: str) -> Value | None:
            if name == "":
                return None
            for depth in range(len(chain) - 1, -1, -1):
                _gr, names = chain[depth]
                if name in names:
                    v = names[name]
                    # make the capture explicit in every graph between there and here
                    for inner in range(depth + 1, len(chain)):
                        ig, _inames = chain[inner]
                        if all(c is not v for c in ig.captures):
                            ig.captures.append(v)
                    return v
            raise ModelError(
                f"{where} reads tensor {name!r}, which no earlier node, input or initializer "
                "defines (the graph is not topologically sorted or the name is misspelled)"
            )

        for idx, n in enumerate(g.node):
            node_name = n.name or f"{n.op_type}_{idx}"
            where = f"node {node_name!r} ({n.op_type})"
            dom = "" if n.domain in DEFAULT_DOMAINS else n.domain
            if n.op_type == "Constant" and dom == "":
                if len(n.output) != 1:
                    raise ModelError(f"{where}: Constant must have exactly one output")
                local[n.output[0]] = graph.add_constant(n.output[0], _constant_node_value(n, where))
                continue
            inputs = [resolve(x, where) for x in n.input]
            attrs: dict[str, Any] = {}
            subgraphs: dict[str, Graph] = {}
            for a in n.attribute:
                if a.ref_attr_name:
                    raise UnsupportedOpError(f"{where}: attribute references (functions) are not supported")
                if a.type == onnx.AttributeProto.GRAPH:
                    subgraphs[a.name] = self.convert_graph(a.g, chain, False)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    raise UnsupportedOpError(f"{where}: list-of-graphs attribute {a.name!r}")
                else:
                    attrs[a.name] = attr_value(a, where)
            # values captured by the bodies become explicit trailing inputs
            extra: list[Value] = []
            for sg in subgraphs.values():
                for c in sg.captures:
                    if all(c is not e for e in extra):
                        extra.append(c)
            outputs = []
            for o in n.output:
                if o == "":
                    self._anon += 1
                    outputs.append(Value(f"__unused_{node_name}_{self._anon}"))
                else:
                    if o in local:
                        raise ModelError(f"{where}: output {o!r} is already defined (ONNX graphs are SSA)")
                    v = self.new_value(o)
                    local[o] = v
                    outputs.append(v)
            node = Node(
                op_type=n.op_type,
                inputs=[*inputs, *extra],
                outputs=outputs,
                attrs=attrs,
                name=node_name,
                domain=dom,
                opset=self.opsets.get(dom, 1),
                subgraphs=subgraphs,
                origin=[node_name],
            )
            if subgraphs:
                node.attrs["_n_onnx_inputs"] = len(inputs)
            graph.add_node(node)

        for vo in g.output:
            if vo.name not in local and not any(vo.name in names for _, names in chain):
                raise ModelError(f"graph output {vo.name!r} is never produced by any node")
            v = resolve(vo.name, f"graph {graph.name!r} output")
            assert v is not None
            dtype, shape = _type_of(vo.type)
            if v.dtype is None:
                v.dtype = dtype
            if v.shape is None and shape is not None and is_main:
                v.shape = shape  # display only; never checked against results
            graph.outputs.append(v)
        if is_main and not graph.outputs:
            raise ModelError("the model's graph has no outputs")
        return graph


def import_onnx(model: str | os.PathLike[str] | onnx.ModelProto | bytes) -> Graph:
    """Parse an ONNX model into an ``ir.Graph``."""
    proto = load_model(model)
    if proto.functions:
        proto = _inline_functions(proto)
    inferred = _infer(proto)
    imp = _Importer(proto)
    imp.collect_value_info(inferred.graph)
    graph = imp.convert_graph(proto.graph, [], True)
    return graph


def _inline_functions(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        from onnx import inliner

        return inliner.inline_local_functions(proto)
    except Exception as e:
        raise ModelError(f"could not inline the model's local functions: {e}") from None


def input_names(proto: onnx.ModelProto) -> Sequence[str]:
    inits = {t.name for t in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in inits]
