"""Which layers run in int8 and where tensors are stored as uint8.

Shared by the rewrite (``passes/quantize.py``) and the simulation the calibrator and the
accuracy budget use (``quant/simulate.py``), so what is measured is what is built.

Rules, given the set ``L`` of layers chosen for int8:

* an *int8 edge* is an input a layer of ``L`` reads quantized: a convolution's data input
  and residual input, a Gemm's data input;
* a value *can be uint8* when an ``L`` layer produces it with an epilogue the int8 kernel
  runs (no activation, Relu, Clip, HardSwish; only Relu with a residual), or a
  *transparent* op (MaxPool: max commutes with quantization) produces it from a value that
  can be uint8;
* a value *is stored uint8* when it can be, and some int8 edge or stored transparent
  output reads it. Its scale and zero point come from its own calibrated range (a
  transparent op's output takes its input's);
* an int8 edge whose value is not stored uint8 quantizes at the edge, with the value's
  range, inside the consuming kernel; every other reader of a stored value reads it
  dequantized.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tensorkiln.ir import Graph, Node, Value

DOMAIN = "tensorkiln"
# epilogues the int8 convolution kernel computes before requantizing (oneDNN post-ops)
U8_CONV_ACTIVATIONS = {"", "Relu", "Clip", "HardSwish"}
U8_CONV_RESIDUAL_ACTIVATIONS = {"", "Relu"}
U8_GEMM_ACTIVATIONS = {"", "Relu"}
TRANSPARENT = {"MaxPool"}


def layer_kind(node: Node) -> str | None:
    """"conv" / "gemm" for a node type the int8 pass can quantize, else None."""
    if node.domain == DOMAIN and node.op_type == "FusedConv":
        return "conv"
    if node.domain == DOMAIN and node.op_type == "FusedGemm":
        return "gemm"
    return None


def candidate_reason(node: Node) -> str | None:
    """None when ``node`` can run in int8, else why not."""
    kind = layer_kind(node)
    if kind is None:
        return f"{node.qualified_op} has no int8 kernel"
    w = node.inputs[1] if len(node.inputs) > 1 else None
    if w is None or w.const is None:
        return "weight is not a constant"
    if kind == "conv":
        if w.const.ndim != 4:
            return f"{w.const.ndim - 2}-D convolution (int8 kernels are 2-D)"
        if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
            return "auto_pad SAME"
        x = node.inputs[0]
        if x is not None and x.shape is not None and len(x.shape) != 4:
            return "input is not 4-D"
    else:
        x = node.inputs[0]
        if w.const.ndim != 2:
            return "weight is not 2-D"
        if x is None or x.shape is None or len(x.shape) < 2:
            return "input rank unknown or < 2"
    return None


def int8_edges(node: Node) -> list[int]:
    """Indices of the inputs an int8 layer reads quantized."""
    if layer_kind(node) == "conv":
        return [i for i in (0, 3) if i < len(node.inputs) and node.inputs[i] is not None]
    return [0]


def outputs_u8(node: Node) -> bool:
    """Can this int8 layer write its output as uint8 (its epilogue runs inside the kernel)?"""
    act = str(node.attrs.get("activation", ""))
    if layer_kind(node) == "gemm":
        return act in U8_GEMM_ACTIVATIONS
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        return act in U8_CONV_RESIDUAL_ACTIVATIONS
    return act in U8_CONV_ACTIVATIONS


def is_transparent(node: Node) -> bool:
    if node.domain != "" or node.op_type not in TRANSPARENT or len(node.outputs) != 1:
        return False
    if node.op_type == "MaxPool":
        k = node.attrs.get("kernel_shape", [])
        pads = list(node.attrs.get("pads", [0] * (2 * len(k))))
        return (len(k) == 2 and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "")
                and pads[:2] == pads[2:] and int(node.attrs.get("storage_order", 0)) == 0
                and int(node.attrs.get("ceil_mode", 0)) == 0)
    return True


@dataclass
class Storage:
    """Where the int8 layers ``layers`` leave uint8 tensors (see the module doc)."""

    layers: set[int]  # id(node)
    stored: set[int] = field(default_factory=set)  # id(value) stored as uint8
    transparent: set[int] = field(default_factory=set)  # id(node) of transparent ops on uint8
    # value id → the value whose range gives its quantization parameters
    param_source: dict[int, Value] = field(default_factory=dict)
    edges: list[tuple[Node, int]] = field(default_factory=list)  # int8 edges (node, input index)


def plan_storage(graph: Graph, layers: list[Node]) -> Storage:
    st = Storage({id(n) for n in layers})
    can: dict[int, bool] = {}
    for n in graph.nodes:  # forward: which values can be uint8
        if id(n) in st.layers:
            can[id(n.outputs[0])] = outputs_u8(n)
        elif is_transparent(n) and n.inputs and n.inputs[0] is not None:
            can[id(n.outputs[0])] = can.get(id(n.inputs[0]), False)
    wanted: set[int] = set()
    for n in reversed(graph.nodes):  # backward: which are wanted as uint8
        if id(n) in st.layers:
            for i in int8_edges(n):
                v = n.inputs[i]
                assert v is not None
                st.edges.append((n, i))
                wanted.add(id(v))
        elif is_transparent(n) and id(n.outputs[0]) in wanted and can.get(id(n.outputs[0]), False):
            st.transparent.add(id(n))
            v = n.inputs[0]
            assert v is not None
            wanted.add(id(v))
    st.edges.reverse()
    for n in graph.nodes:
        for v in n.outputs:
            if can.get(id(v), False) and id(v) in wanted:
                st.stored.add(id(v))
                if id(n) in st.transparent:
                    src = n.inputs[0]
                    assert src is not None
                    st.param_source[id(v)] = st.param_source.get(id(src), src)
                else:
                    st.param_source[id(v)] = v
    return st


def tapped_values(graph: Graph, candidates: list[Node]) -> list[Value]:
    """Values whose ranges calibration must measure for these candidate layers."""
    seen: set[int] = set()
    out: list[Value] = []
    for n in candidates:
        vals = [n.inputs[i] for i in int8_edges(n)] + [n.outputs[0]]
        for v in vals:
            if v is not None and id(v) not in seen and v.const is None:
                seen.add(id(v))
                out.append(v)
    return out


@dataclass
class QuantPlan:
    """What the int8 rewrite does: the layers it quantizes (by output value name, unique in a
    graph) and the calibrated range of every value it needs."""

    layers: list[str] = field(default_factory=list)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)


def layer_key(node: Node) -> str:
    return node.outputs[0].name


def nodes_for(graph: Graph, keys: list[str]) -> list[Node]:
    want = set(keys)
    return [n for n in graph.nodes if n.outputs and layer_key(n) in want]
