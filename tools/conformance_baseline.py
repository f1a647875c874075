"""Onnxruntime baseline for the ONNX backend node-test conformance suite.

Loads every node test that the installed ``onnx`` generates in memory
(``onnx.backend.test.loader.load_node_model_tests()``), keeps the ones whose
tensors all have an in-scope element type (float32, float16, int8, uint8,
int32, int64, bool), runs those through onnxruntime's CPU execution provider
and compares the outputs exactly as ``onnx.backend.test.runner`` does.

The sorted names of the in-scope tests that onnxruntime passes are written to
``tests/conformance/ort_passing.txt``; ``tests/conformance/ops_needed.txt``
lists the op types those tests use, grouped into families.

    python tools/conformance_baseline.py            # rewrite both files
    python tools/conformance_baseline.py --report failures.json   # + details
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "tests" / "conformance"
PASSING_FILE = CONF_DIR / "ort_passing.txt"
OPS_FILE = CONF_DIR / "ops_needed.txt"

IN_SCOPE_ELEM_TYPES = {
    TensorProto.FLOAT,
    TensorProto.FLOAT16,
    TensorProto.INT8,
    TensorProto.UINT8,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.BOOL,
}
IN_SCOPE_NP_DTYPES = {
    np.dtype(np.float32),
    np.dtype(np.float16),
    np.dtype(np.int8),
    np.dtype(np.uint8),
    np.dtype(np.int32),
    np.dtype(np.int64),
    np.dtype(np.bool_),
}
# Integer attributes that name an element type (Cast.to, RandomNormal.dtype,
# EyeLike.dtype, QuantizeLinear.output_dtype, ...).
DTYPE_ATTRS = {"to", "dtype", "output_dtype", "output_datatype"}

# Rough op families, so the engine work can be split.  Anything not listed
# lands in "other".
FAMILIES: dict[str, set[str]] = {
    "elementwise/activation": set(
        """Abs Acos Acosh Add And Asin Asinh Atan Atanh BitCast BitShift BitwiseAnd
        BitwiseNot BitwiseOr BitwiseXor Cast CastLike Ceil Celu Clip Cos Cosh Div Elu
        Equal Erf Exp Floor Gelu Greater GreaterOrEqual HardSigmoid HardSwish Hardmax
        Identity IsInf IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Max Mean Min
        Mish Mod Mul Neg Not Or PRelu Pow Reciprocal Relu Round Selu Shrink Sigmoid
        Sign Sin Sinh Softmax Softplus Softsign Sqrt Sub Sum Swish Tan Tanh
        ThresholdedRelu Where Xor""".split()
    ),
    "tensor-shape/indexing": set(
        """ArgMax ArgMin CenterCropPad Compress Concat Constant ConstantOfShape
        DepthToSpace Expand EyeLike Flatten Gather GatherElements GatherND NonZero
        OneHot Pad Range Reshape Resize ReverseSequence Scatter ScatterElements
        ScatterND Shape Size Slice SpaceToDepth Split Squeeze TensorScatter Tile TopK
        Transpose Trilu Unique Unsqueeze Upsample""".split()
    ),
    "reductions": set(
        """CumProd CumSum ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
        ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare""".split()
    ),
    "nn (conv/pool/norm/matmul/attention)": set(
        """AffineGrid Attention AveragePool BatchNormalization CausalConvWithState
        Col2Im Conv ConvTranspose DeformConv Dropout Einsum Gemm GlobalAveragePool
        GlobalLpPool GlobalMaxPool GridSample GroupNormalization InstanceNormalization
        LRN LayerNormalization LinearAttention LpNormalization LpPool MatMul MaxPool
        MaxRoiPool MaxUnpool MeanVarianceNormalization NegativeLogLikelihoodLoss
        NonMaxSuppression RMSNormalization RoiAlign RotaryEmbedding
        SoftmaxCrossEntropyLoss""".split()
    ),
    "rnn": {"GRU", "LSTM", "RNN"},
    "control flow (If/Loop/Scan)": {"If", "Loop", "Scan"},
    "quantization": set(
        """ConvInteger DequantizeLinear DynamicQuantizeLinear MatMulInteger QLinearConv
        QLinearMatMul QuantizeLinear""".split()
    ),
    "signal": set(
        """BlackmanWindow DFT HammingWindow HannWindow MelWeightMatrix STFT""".split()
    ),
}


def family_of(op: str) -> str:
    for fam, ops in FAMILIES.items():
        if op in ops:
            return fam
    return "other"


# --------------------------------------------------------------------------
# loading / scope classification


def load_cases() -> list[Any]:
    """All node test cases of the installed onnx (takes ~15 s)."""
    from onnx.backend.test.loader import load_node_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(load_node_model_tests())


def _type_problems(tp: onnx.TypeProto, where: str) -> list[str]:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        et = tp.tensor_type.elem_type
        if et and et not in IN_SCOPE_ELEM_TYPES:
            return [f"{where}: {TensorProto.DataType.Name(et)}"]
        return []
    if kind is None:
        return []
    return [f"{where}: {kind}"]


def _graph_problems(g: onnx.GraphProto) -> list[str]:
    probs: list[str] = []
    for vi in [*g.input, *g.output, *g.value_info]:
        probs += _type_problems(vi.type, f"value {vi.name!r}")
    for init in g.initializer:
        if init.data_type not in IN_SCOPE_ELEM_TYPES:
            probs.append(f"initializer {init.name!r}: {TensorProto.DataType.Name(init.data_type)}")
    if len(g.sparse_initializer):
        probs.append("sparse initializer")
    for node in g.node:
        for a in node.attribute:
            tensors = []
            if a.type == AttributeProto.TENSOR:
                tensors = [a.t]
            elif a.type == AttributeProto.TENSORS:
                tensors = list(a.tensors)
            elif a.type in (AttributeProto.SPARSE_TENSOR, AttributeProto.SPARSE_TENSORS):
                probs.append(f"{node.op_type}.{a.name}: sparse tensor")
            elif a.type == AttributeProto.GRAPH:
                probs += _graph_problems(a.g)
            elif a.type == AttributeProto.GRAPHS:
                for sg in a.graphs:
                    probs += _graph_problems(sg)
            elif a.type == AttributeProto.TYPE_PROTO:
                probs += _type_problems(a.tp, f"{node.op_type}.{a.name}")
            elif a.type == AttributeProto.INT and a.name in DTYPE_ATTRS:
                if a.i and a.i not in IN_SCOPE_ELEM_TYPES:
                    probs.append(f"{node.op_type}.{a.name}={TensorProto.DataType.Name(a.i)}")
            for t in tensors:
                if t.data_type not in IN_SCOPE_ELEM_TYPES:
                    name = TensorProto.DataType.Name(t.data_type)
                    probs.append(f"{node.op_type}.{a.name}: {name}")
    return probs


def _data_problems(x: Any, where: str) -> list[str]:
    if x is None:
        return [f"{where}: optional (None)"]
    if isinstance(x, (list, tuple)):
        return [f"{where}: sequence"]
    if isinstance(x, TensorProto):
        if x.data_type not in IN_SCOPE_ELEM_TYPES:
            return [f"{where}: {TensorProto.DataType.Name(x.data_type)}"]
        return []
    dt = getattr(x, "dtype", None)
    if dt is None:
        return [f"{where}: {type(x).__name__}"]
    if np.dtype(dt) not in IN_SCOPE_NP_DTYPES:
        return [f"{where}: {np.dtype(dt)}"]
    return []


def out_of_scope_reasons(case: Any) -> list[str]:
    """Why ``case`` is out of scope; an empty list means it is in scope."""
    if case.model is None:
        return ["no in-memory model"]
    probs = _graph_problems(case.model.graph)
    for func in case.model.functions:
        for node in func.node:
            for a in node.attribute:
                if a.type == AttributeProto.INT and a.name in DTYPE_ATTRS:
                    if a.i and a.i not in IN_SCOPE_ELEM_TYPES:
                        probs.append(f"{node.op_type}.{a.name}={TensorProto.DataType.Name(a.i)}")
    for inputs, outputs in case.data_sets or []:
        for i, x in enumerate(inputs):
            probs += _data_problems(x, f"input data {i}")
        for i, x in enumerate(outputs):
            probs += _data_problems(x, f"output data {i}")
    return probs


def op_types(model: onnx.ModelProto) -> set[str]:
    """Op types of all nodes, subgraphs included (domain-qualified if not ai.onnx)."""
    ops: set[str] = set()

    def walk(g: onnx.GraphProto) -> None:
        for n in g.node:
            dom = n.domain if n.domain not in ("", "ai.onnx") else ""
            ops.add(f"{dom}::{n.op_type}" if dom else n.op_type)
            for a in n.attribute:
                if a.type == AttributeProto.GRAPH:
                    walk(a.g)
                elif a.type == AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        walk(sg)

    walk(model.graph)
    return ops


# --------------------------------------------------------------------------
# running / comparing (mirrors onnx.backend.test.runner)


def normalize(x: Any) -> Any:
    if isinstance(x, TensorProto):
        return numpy_helper.to_array(x)
    if isinstance(x, (list, tuple)):
        return [normalize(v) for v in x]
    if isinstance(x, np.generic):
        return np.asarray(x)
    return x


def assert_similar_outputs(ref: list[Any], out: list[Any], rtol: float, atol: float) -> None:
    np.testing.assert_equal(len(out), len(ref))
    for i in range(len(out)):
        if isinstance(out[i], (list, tuple)):
            assert isinstance(ref[i], (list, tuple)), f"output {i}: unexpected sequence"
            assert_similar_outputs(list(ref[i]), list(out[i]), rtol, atol)
            continue
        o, r = np.asarray(out[i]), np.asarray(ref[i])
        np.testing.assert_array_equal(o.shape, r.shape, err_msg=f"Output {i} has incorrect shape")
        if r.dtype == object:
            np.testing.assert_array_equal(o, r)
        else:
            np.testing.assert_equal(o.dtype, r.dtype)
            np.testing.assert_allclose(o, r, rtol=rtol, atol=atol)


def feeds_for(model: onnx.ModelProto, inputs: list[Any]) -> dict[str, Any]:
    """Data-set inputs by position onto the graph inputs that are not initializers."""
    inits = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in inits]
    return {n: normalize(x) for n, x in zip(names, inputs)}


def run_ort(case: Any) -> None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    sess = ort.InferenceSession(
        case.model.SerializeToString(), so, providers=["CPUExecutionProvider"]
    )
    for inputs, ref_outputs in case.data_sets:
        outs = sess.run(None, feeds_for(case.model, inputs))
        assert_similar_outputs([normalize(r) for r in ref_outputs], outs, case.rtol, case.atol)


# --------------------------------------------------------------------------


def write_ops_file(passing: list[Any], path: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """Op types with (tests using the op, of which not ``_expanded``), by family."""
    counts: collections.Counter[str] = collections.Counter()
    direct: collections.Counter[str] = collections.Counter()
    for c in passing:
        ops = op_types(c.model)
        counts.update(ops)
        if "_expanded" not in c.name:
            direct.update(ops)
    grouped: dict[str, dict[str, tuple[int, int]]] = {f: {} for f in [*FAMILIES, "other"]}
    for op, n in sorted(counts.items()):
        grouped[family_of(op)][op] = (n, direct[op])
    n_exp = sum("_expanded" in c.name for c in passing)
    lines = [
        "# Op types used by the ORT-passing in-scope ONNX node tests (ort_passing.txt).",
        f"# {len(passing)} tests, {n_exp} of them `_expanded` (the op's function body instead",
        "# of the op).  Columns: op, tests using it, of which not `_expanded`.",
        "# Regenerate: python tools/conformance_baseline.py",
    ]
    for fam, ops in grouped.items():
        if not ops:
            continue
        lines.append("")
        lines.append(f"## {fam}: {len(ops)} ops")
        lines += [f"{op:<36} {n:>4} {d:>4}" for op, (n, d) in ops.items()]
    path.write_text("\n".join(lines) + "\n")
    return grouped


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=PASSING_FILE)
    ap.add_argument("--ops-out", type=Path, default=OPS_FILE)
    ap.add_argument("--report", type=Path, help="write per-test status/reasons as JSON")
    ap.add_argument("-k", default=None, help="only tests whose name contains this")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    cases = load_cases()
    t_load = time.perf_counter() - t0
    if args.k:
        cases = [c for c in cases if args.k in c.name]

    report: dict[str, dict[str, Any]] = {}
    in_scope, passing = [], []
    t1 = time.perf_counter()
    for c in sorted(cases, key=lambda c: c.name):
        reasons = out_of_scope_reasons(c)
        if reasons:
            report[c.name] = {"status": "out_of_scope", "why": sorted(set(reasons))}
            continue
        in_scope.append(c)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run_ort(c)
        except Exception as e:  # any ORT failure means "not in baseline"
            msg = f"{type(e).__name__}: {e}".strip().splitlines()
            report[c.name] = {"status": "ort_fail", "why": msg[:6]}
            continue
        passing.append(c)
        report[c.name] = {"status": "ort_pass"}
    t_run = time.perf_counter() - t1

    header = (
        f"# ONNX backend node tests that onnxruntime passes, in-scope dtypes only "
        f"(float32/float16/int8/uint8/int32/int64/bool). onnx {onnx.__version__}, "
        f"onnxruntime {ort.__version__}: {len(cases)} node tests, {len(in_scope)} in scope, "
        f"{len(passing)} ORT-passing. Regenerate: python tools/conformance_baseline.py"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + "\n" + "".join(f"{c.name}\n" for c in passing))
    grouped = write_ops_file(passing, args.ops_out)
    if args.report:
        args.report.write_text(json.dumps(report, indent=1, sort_keys=True))

    print(header[2:])
    print(f"load {t_load:.1f} s, classify+ORT {t_run:.1f} s")
    print("ops (tests using it / of which not _expanded):")
    for fam, ops in grouped.items():
        if ops:
            print(f"  {fam}: {', '.join(f'{o}({n}/{d})' for o, (n, d) in ops.items())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
