"""Before/after helpers: build with and without passes, compare outputs, count matches."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

import tensorkiln


def make_model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
               outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto], opset: int = 17
               ) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", inputs, outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(m)


def before_after(model: onnx.ModelProto, feeds: dict[str, np.ndarray], **opts: object
                 ) -> tuple[tensorkiln.Engine, tensorkiln.Engine]:
    """Build unoptimized and optimized engines and assert they give the same outputs."""
    before = tensorkiln.build(model, optimize=False)
    after = tensorkiln.build(model, **opts)  # type: ignore[arg-type]
    ref = before.run(feeds)
    got = after.run(feeds)
    assert ref.keys() == got.keys()
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=k)
    return before, after


def ops(engine: tensorkiln.Engine) -> list[str]:
    return [s["op"] for s in engine.steps()]
