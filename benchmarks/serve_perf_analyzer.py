"""Triton's perf_analyzer against `tensorkiln serve`: concurrency sweep 1..8 and request-rate mode,
over HTTP and gRPC, with `-b 4`.

    python benchmarks/serve_perf_analyzer.py [--model synthetic|mobilenetv2|resnet50] [--perf-analyzer PATH]

perf_analyzer: the binary inside tritonclient==2.51.0 (see .ci/run; needs libb64-0d and
nvidia-cuda-runtime-cu12 for libcudart.so.12, no GPU).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_common import add_model, load_average, model_source

from tensorkiln.serve.loadgen import ServerProcess


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="synthetic")
    ap.add_argument("--perf-analyzer", default=os.environ.get("TENSORKILN_PERF_ANALYZER", "perf_analyzer"))
    ap.add_argument("--libs", default=os.environ.get("TENSORKILN_PERF_ANALYZER_LIBS", ""))
    ap.add_argument("--delay-us", type=int, default=5000)
    ap.add_argument("--interval-ms", type=int, default=2000)
    ap.add_argument("--rates", default="", help="request-rate range start:end:step (default: from the sweep)")
    ap.add_argument("--stability", default="1000",
                    help="perf_analyzer --stability-percentage (1000: take the windows as they come; this shared "
                         "machine rarely gives three windows within 10%%)")
    args = ap.parse_args()
    env = dict(os.environ)
    libs = args.libs or str(Path(args.perf_analyzer).resolve().parent.parent / "nvidia" / "cuda_runtime" / "lib")
    env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    with tempfile.TemporaryDirectory(prefix="tk-pa-") as tmp:
        root = Path(tmp) / "repo"
        src, _, _ = model_source(args.model, Path(tmp))
        add_model(root, "m", src, f"max_batch_size: 16\ndynamic_batching {{ max_queue_delay_microseconds: "
                                  f"{args.delay_us} }}\n")
        server = ServerProcess(str(root))
        try:
            for proto, url in (("http", server.http_url), ("grpc", server.grpc_url)):
                common = [args.perf_analyzer, "-m", "m", "-u", url, "-i", proto, "-b", "4",
                          "--measurement-interval", str(args.interval_ms), "--max-trials", "3",
                          "--stability-percentage", args.stability]
                p = subprocess.run([*common, "--concurrency-range", "1:8:1"], capture_output=True, text=True,
                                   env=env, timeout=900)
                print(f"== {proto}: concurrency 1..8, -b 4 (exit {p.returncode}; load average {load_average()})")
                lines = [ln for ln in p.stdout.splitlines() if ln.startswith("Concurrency:")]
                print("\n".join(lines) or p.stdout[-2000:] + p.stderr[-2000:])
                best = max((float(re.search(r"throughput: ([\d.]+)", ln).group(1)) for ln in lines), default=0.0)
                rates = args.rates or f"{max(1, int(best / 4 * 0.5))}:{max(2, int(best / 4 * 1.5))}:" \
                                      f"{max(1, int(best / 4 * 0.5))}"
                p = subprocess.run([*common, "--request-rate-range", rates], capture_output=True, text=True,
                                   env=env, timeout=900)
                print(f"== {proto}: request rate {rates} req/s, -b 4 (exit {p.returncode}; load average "
                      f"{load_average()})")
                lines = [ln for ln in p.stdout.splitlines() if ln.startswith("Request Rate:") and "throughput" in ln]
                print("\n".join(lines) or p.stdout[-2000:] + p.stderr[-2000:])
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
