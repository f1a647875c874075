"""Overload at 3x capacity with max_queue_size (a short run of benchmarks/serve_overload.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_overload.py"


def test_overload_rejects_fast_and_loses_nothing(tmp_path):
    out = tmp_path / "overload.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--model", "synthetic", "--duration", "8", "--capacity-s", "4",
                        "--max-queue-size", "8", "--json", str(out)], capture_output=True, text=True, timeout=400)
    assert out.exists(), p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads(out.read_text())
    failed = [k for k, v in r["checks"].items() if not v]
    assert not failed, (failed, p.stdout[-3000:])
    assert p.returncode == 0
    assert r["status"]["503"] > 0 and r["status"]["200"] > 0
    assert r["server_exit"] == 0  # graceful shutdown after the overload
