"""Triton's perf_analyzer (the binary bundled in tritonclient 2.51.0; .ci/run installs it) against the
server over HTTP and gRPC: a short concurrency sweep, request-rate mode, and batching checks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import tiny_model
from tests.serve.conftest import write_model

pytestmark = pytest.mark.slow


def _perf_analyzer() -> tuple[str, dict[str, str]]:
    exe = os.environ.get("TENSORKILN_PERF_ANALYZER") or shutil.which("perf_analyzer") or ""
    if not exe or not os.access(exe, os.X_OK):
        msg = ("perf_analyzer not found: set TENSORKILN_PERF_ANALYZER (see .ci/run: tritonclient==2.51.0 "
               "and libb64-0d)")
        if os.environ.get("TENSORKILN_REQUIRE_PERF_ANALYZER"):
            pytest.fail(msg)
        pytest.skip(msg)
    env = dict(os.environ)
    libs = os.environ.get("TENSORKILN_PERF_ANALYZER_LIBS") or str(
        Path(exe).resolve().parent.parent / "nvidia" / "cuda_runtime" / "lib")
    env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return exe, env


@pytest.fixture(scope="module")
def pa_server(tmp_path_factory):
    from tensorkiln.serve import Server

    root = tmp_path_factory.mktemp("pa_repo")
    write_model(root, "tiny", tiny_model(), """
        max_batch_size: 32
        dynamic_batching { max_queue_delay_microseconds: 5000 }
        """)
    s = Server(str(root), http_port=0, grpc_port=0).start(timeout=300)
    yield s
    s.stop()


def _run(args: list[str], timeout: float = 120) -> str:
    exe, env = _perf_analyzer()
    p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, env=env)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    return out


COMMON = ["-m", "tiny", "--measurement-interval", "500", "--max-trials", "3", "--stability-percentage", "1000"]


def _counts(server) -> tuple[int, int]:
    s = server.core.statistics("tiny")["model_stats"][0]
    return s["inference_count"], s["execution_count"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_concurrency_sweep(pa_server, protocol):
    url = pa_server.http_url if protocol == "http" else pa_server.grpc_url
    out = _run([*COMMON, "-u", url, "-i", protocol, "-b", "4", "--concurrency-range", "1:8:3"])
    assert re.findall(r"Concurrency: (\d+), throughput", out) == ["1", "4", "7"], out[-2000:]
    # perf_analyzer reads the server-side statistics: batching packs several 4-row requests per execution
    block = out.split("Request concurrency: 4", 1)[1]
    inf = int(re.search(r"Inference count: (\d+)", block).group(1))
    exe = int(re.search(r"Execution count: (\d+)", block).group(1))
    assert inf / exe > 4, block[:1500]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_request_rate_mode(pa_server, protocol):
    url = pa_server.http_url if protocol == "http" else pa_server.grpc_url
    out = _run([*COMMON, "-u", url, "-i", protocol, "-b", "4", "--request-rate-range", "40:80:40"])
    assert re.findall(r"Request Rate: (\d+), throughput", out) == ["40", "80"], out[-2000:]


def test_dynamic_batching_happened(pa_server):
    """Concurrency 4 with batch-1 requests and a 5 ms delay: executions hold more than one request."""
    inf0, exe0 = _counts(pa_server)
    _run([*COMMON, "-u", pa_server.http_url, "-i", "http", "-b", "1", "--concurrency-range", "4"])
    inf1, exe1 = _counts(pa_server)
    assert exe1 > exe0
    assert (inf1 - inf0) / (exe1 - exe0) > 1.0
