"""INT8 speed, side by side in one run: tensorkiln fp32 vs tensorkiln int8 vs onnxruntime int8.

    python benchmarks/bench_int8.py [--model resnet50] [--batch 1] [--rounds 20] [--kernels]

The int8 model is onnxruntime's ``quantize_static`` QDQ form with uint8 activations and int8
per-channel weights (U8S8, MinMax on a few random images; cached next to the zoo export). Both
tensorkiln int8 (importing that QDQ model) and onnxruntime run the same file; tensorkiln fp32
runs the fp32 export, and tensorkiln int8 calibrated by itself (``precision="int8"``,
``strict=True``) is shown too. Timing follows ``tensorkiln.bench.interleave``: rounds of
(untimed warm-up, timed run) per runtime, order flipped every round, ratios = median of
per-round ratios. ``--kernels`` first times single convolutions of the model's shapes through
each candidate int8 kernel (which one the int8 path should call).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import tensorkiln
from tensorkiln import zoo
from tensorkiln.bench.interleave import SETTLE_S, Runner, measure_side_by_side


def qdq_model(model: str, n_calib: int = 8) -> Path:
    """onnxruntime's U8S8 per-channel QDQ quantization of the zoo model (made once, cached)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = zoo.get(model)
    out = src.with_name(src.stem + f"-qdq-u8s8-pc-c{n_calib}.onnx")
    if out.is_file():
        return out
    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))
    feeds = [zoo.sample_inputs(model, batch=1, seed=100 + i) for i in range(n_calib)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    tmp = out.with_suffix(".tmp.onnx")
    quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    os.replace(tmp, out)
    pre.unlink(missing_ok=True)
    return out


def _conv_runners(c: int, k: int, ks: int, hw: int) -> list[Runner]:
    cl = torch.channels_last
    p = ks // 2
    x = torch.randn(1, c, hw, hw).relu().contiguous(memory_format=cl)
    w = torch.randn(k, c, ks, ks) * 0.05
    b = torch.randn(k)
    wp = torch.ops.mkldnn._reorder_convolution_weight(w, [p, p], [1, 1], [1, 1], 1, [1, c, hw, hw])
    xs = float(x.max()) / 255
    qx = torch.round(x / xs).clamp(0, 255).to(torch.uint8).contiguous(memory_format=cl)
    ws = w.abs().amax((1, 2, 3)) / 63
    qw = torch.round(w / ws.view(-1, 1, 1, 1)).to(torch.int8)
    wz = torch.zeros(k, dtype=torch.long)
    qwp = torch.ops.onednn.qconv_prepack(qw, ws, xs, 0, [1, 1], [p, p], [1, 1], 1, [1, c, hw, hw])
    runners = [
        Runner("fp32 mkldnn", lambda: torch.ops.mkldnn._convolution_pointwise(
            x, wp, b, [p, p], [1, 1], [1, 1], 1, "relu", [], None)),
        Runner("onednn.qconv2d_pointwise", lambda: torch.ops.onednn.qconv2d_pointwise(
            qx, xs, 0, qwp, ws, wz, b, [1, 1], [p, p], [1, 1], 1, 0.05, 0, torch.uint8, "relu", [], "")),
    ]
    from tensorkiln.backends.cpu.native import qdirectconv

    if qdirectconv.available():  # tensorkiln's own kernel (the QConv tactic direct-int8)
        dq = qdirectconv.QDirectConv(qw.numpy(), ws.numpy(), b.numpy(), xs, 0, [1, 1], [p] * 4, [1, 1], "Relu", [],
                                     True, 0.05, 0)
        runners.append(Runner("tensorkiln direct-int8", lambda: dq(qx)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated in PyTorch
        for eng in ("onednn", "x86"):
            torch.backends.quantized.engine = eng
            qxq = torch.quantize_per_tensor(x, xs, 0, torch.quint8).contiguous(memory_format=cl)
            qwq = torch.quantize_per_channel(w, ws.double(), wz, 0, torch.qint8)
            pk = torch.ops.quantized.conv2d_prepack(qwq, b, [1, 1], [p, p], [1, 1], 1)
            runners.append(Runner(f"quantized.conv2d_relu[{eng}]",
                                  (lambda q=qxq, pk=pk: torch.ops.quantized.conv2d_relu(q, pk, 0.05, 0))))
    return runners


def kernel_table(rounds: int = 15) -> None:
    """One convolution per shape: fp32 oneDNN vs the int8 kernels PyTorch exposes and tensorkiln's
    own (warm, isolated: in a whole network the ranking can differ, see the QConv tactics' doc).
    (The quantized engine is chosen when the weights are prepacked.)"""
    shapes = [(64, 64, 3, 56), (256, 64, 1, 56), (64, 256, 1, 56), (128, 128, 3, 28), (256, 256, 3, 14),
              (1024, 256, 1, 14), (256, 1024, 1, 14), (512, 512, 3, 7), (2048, 512, 1, 7)]
    print("single convolutions, batch 1, median ms over interleaved rounds (ratio to fp32):")
    for c, k, ks, hw in shapes:
        runners = _conv_runners(c, k, ks, hw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = measure_side_by_side(runners, rounds=rounds, baseline="fp32 mkldnn")
        cells = ", ".join(f"{r.name} {res.median(r.name):.3f} ({res.ratio(r.name):.2f})" for r in runners)
        print(f"  {c}->{k} {ks}x{ks} @{hw}: {cells}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--settle", type=float, default=SETTLE_S,
                    help="seconds before each runtime's warm-up (onnxruntime's threads spin after a run)")
    ap.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: all cores)")
    ap.add_argument("--kernels", action="store_true", help="also time single convolutions per int8 kernel")
    ap.add_argument("--no-calibrated", action="store_true", help="skip tensorkiln's own int8 calibration")
    ap.add_argument("--ort-fp32", action="store_true", help="also time onnxruntime fp32")
    ap.add_argument("--ort-spin", choices=["1", "0", "both"], default="both",
                    help="onnxruntime session.intra_op.allow_spinning (both: one pass each)")
    args = ap.parse_args()
    import onnxruntime as ort

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    print(f"load average before: {os.getloadavg()}")
    if args.kernels:
        kernel_table()
    t0 = time.perf_counter()
    qdq = qdq_model(args.model)
    print(f"QDQ model: {qdq} ({time.perf_counter() - t0:.1f} s)")
    feeds = zoo.sample_inputs(args.model, batch=args.batch, seed=7)
    name = next(iter(feeds))
    fp32 = tensorkiln.build(zoo.get(args.model), threads=threads)
    int8 = tensorkiln.build(qdq, threads=threads)
    calibrated = None
    if not args.no_calibrated:
        calib = [zoo.sample_inputs(args.model, batch=1, seed=100 + i) for i in range(8)]
        calibrated = tensorkiln.build(zoo.get(args.model), threads=threads, precision="int8", strict=True,
                                      calibrator="entropy", calibration_data=calib)
    ops = [s["op"] for s in int8.steps()]
    print(f"tensorkiln int8 engine: {ops.count('tensorkiln::QConv')} QConv, {len(ops)} steps")
    # onnxruntime's idle threads spin for a while after each run and slow down whatever runs next on
    # 2 cores; time it both ways (default spinning, and allow_spinning=0), each pass side by side
    for spin in (["1", "0"] if args.ort_spin == "both" else [args.ort_spin]):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        sess = ort.InferenceSession(str(qdq), so, providers=["CPUExecutionProvider"])
        diff = float(np.abs(int8.run(feeds)[sess.get_outputs()[0].name] - sess.run(None, feeds)[0]).max())
        runners = [Runner("tensorkiln fp32", lambda: fp32.run(feeds)),
                   Runner("tensorkiln int8 (QDQ)", lambda: int8.run(feeds)),
                   Runner("onnxruntime int8 (QDQ)", lambda s=sess: s.run(None, feeds))]
        if calibrated is not None:
            runners.insert(2, Runner("tensorkiln int8 (calibrated)", lambda: calibrated.run(feeds)))
        if args.ort_fp32:  # a second onnxruntime thread pool
            sess_fp = ort.InferenceSession(str(zoo.get(args.model)), so, providers=["CPUExecutionProvider"])
            runners.append(Runner("onnxruntime fp32", lambda s=sess_fp: s.run(None, feeds)))
        res = measure_side_by_side(runners, rounds=args.rounds, baseline="tensorkiln fp32", settle_s=args.settle)
        print(f"\n{args.model} batch {args.batch}, {threads} threads, {args.rounds} interleaved rounds, settle "
              f"{args.settle:g} s, onnxruntime "
              f"allow_spinning={spin} (max |int8 outputs diff| {diff:.3g}; load average after: {os.getloadavg()}):")
        for r in runners:
            print(f"  {r.name:30s} median {res.median(r.name):8.2f} ms  p99 {res.p99(r.name):8.2f} ms  "
                  f"× tensorkiln fp32 {res.ratio(r.name):.3f}  × onnxruntime int8 "
                  f"{res.ratio(r.name, 'onnxruntime int8 (QDQ)'):.3f}")
        del sess
    del name


if __name__ == "__main__":
    main()
