"""Cleanup passes: identity elimination and constant folding."""

from __future__ import annotations

import numpy as np

from tensorkiln.ir import Graph

# before -> after:  y = Identity(x); z = F(y)  ->  z = F(x)
_IDENTITY_OPS = {"Identity"}


def eliminate_identities(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        is_id = node.op_type in _IDENTITY_OPS and node.domain == ""
        if node.op_type == "Dropout" and node.domain == "":
            mask_used = len(node.outputs) > 1 and node.outputs[1].uses
            training = len(node.inputs) > 2 and node.inputs[2] is not None
            is_id = not mask_used and not training and not any(
                o is v for o in graph.outputs for v in node.outputs[1:])
        if node.op_type == "Cast" and node.domain == "":
            src = node.inputs[0]
            is_id = src is not None and src.dtype is not None and src.dtype.value == node.attrs.get("to")
        if not is_id or node.inputs[0] is None:
            continue
        src, out = node.inputs[0], node.outputs[0]
        if any(o is out for o in graph.outputs):
            if any(o is src for o in graph.outputs) or src in graph.inputs:
                continue  # keep: an output must stay a distinct tensor
            if src.producer is None:
                continue
        graph.remove_node(node)
        graph.replace_all_uses(out, src)
        if any(o is src for o in graph.outputs) and out.name != src.name and src.producer is not None:
            src.name = out.name  # the graph output keeps its ONNX name
        changed = True
    for node in graph.nodes:
        for sg in node.subgraphs.values():
            changed |= eliminate_identities(sg)
    return changed


# before -> after:  y = F(const_a, const_b)  ->  y = const
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
            "Multinomial", "If", "Loop", "Scan"}
_MAX_FOLD_BYTES = 1 << 22  # never blow a small subgraph up into a large constant


def fold_constants(graph: Graph) -> bool:
    import torch

    from tensorkiln.backends.cpu.base import BuildContext, torch_const
    from tensorkiln.backends.cpu.registry import REGISTRY
    from tensorkiln.errors import TensorkilnError

    changed = False
    for node in list(graph.nodes):
        if node.op_type in _NO_FOLD or node.subgraphs or node.domain not in ("", "tensorkiln"):
            continue
        ins = [v for v in node.inputs if v is not None]
        if not ins or not all(v.is_const for v in ins):
            continue
        if any(v.const is not None and v.const.dtype == object for v in ins):
            continue
        factory = REGISTRY.get((node.domain, node.op_type))
        if factory is None:
            continue
        try:
            kernel = factory(node, BuildContext(compile_subgraph=_no_subgraphs))
            args = [None if v is None else torch_const(v.const) for v in node.inputs]  # type: ignore[arg-type]
            res = kernel(*args)
        except (TensorkilnError, RuntimeError, ValueError, TypeError, IndexError):
            continue  # leave it to run time, where the error names the node
        results = [res] if len(node.outputs) == 1 else list(res)
        if not all(isinstance(r, torch.Tensor) for r in results):
            continue
        total_in = sum(v.const.nbytes for v in ins if v.const is not None)
        total_out = sum(r.numel() * r.element_size() for r in results)
        if total_out > max(_MAX_FOLD_BYTES, total_in):
            continue
        graph.remove_node(node)
        for v, r in zip(node.outputs, results):
            arr = np.require(r.detach().contiguous().numpy().copy(), requirements="C")
            v.const = arr
            v.producer = None
            v.shape = tuple(arr.shape)
            graph.constants[v.name] = v
        changed = True
    for node in graph.nodes:
        for sg in node.subgraphs.values():
            changed |= fold_constants(sg)
    return changed


def _no_subgraphs(g: object) -> object:
    raise RuntimeError("no subgraphs during constant folding")
