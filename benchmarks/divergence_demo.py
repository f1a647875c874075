"""First-divergence demo: a QDQ conv net with one layer's weight scale deliberately wrong.

    python benchmarks/divergence_demo.py [--layer conv2] [--factor 1.6] [--reference ort] [--out DIR]

Writes the clean model and the corrupted one (the engine under test) to DIR, then runs
``tensorkiln compare CORRUPTED --reference-model CLEAN --find-divergence``, which taps the
engine at its fused-step boundaries and names the first step whose error jumps. The
pytest test tests/cli/test_cli_bench.py::test_compare_find_divergence_names_the_corrupted_layer
asserts the same.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tensorkiln.cli import main
from tests.bench.qdq_net import LAYERS, qdq_net


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layer", default="conv2", choices=LAYERS)
    p.add_argument("--factor", type=float, default=1.6, help="multiply that layer's weight scale by this")
    p.add_argument("--reference", default="ort", choices=["ort", "onnx-reference", "fp32"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threshold", default="0.05",
                   help="tap error that counts (0.05: int8 kernels round a few units off a float QDQ reference)")
    p.add_argument("--float-qdq", action="store_true",
                   help="keep Q/DQ as float ops (disable the fuse-qdq pass); then 1e-3 works as threshold")
    p.add_argument("--out", default=None, help="directory for the two models (default: a temp dir)")
    a = p.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="tk-divergence-"))
    out.mkdir(parents=True, exist_ok=True)
    clean, bad = out / "qdq_clean.onnx", out / f"qdq_{a.layer}_scale_x{a.factor:g}.onnx"
    onnx.save(qdq_net(), str(clean))
    onnx.save(qdq_net(corrupt=a.layer, factor=a.factor), str(bad))
    print(f"clean model: {clean}\ncorrupted model ({a.layer} weight scale x{a.factor:g}): {bad}\n")
    return main(["compare", str(bad), "--reference-model", str(clean), "--reference", a.reference,
                 "--batch", str(a.batch), "--find-divergence", "--all-taps", "--threshold", a.threshold,
                 *(["--disable-pass", "fuse-qdq"] if a.float_qdq else [])])


if __name__ == "__main__":
    raise SystemExit(cli())
