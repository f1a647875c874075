import base64
import re
from pathlib import Path

import onnx
import pytest

from tensorkiln.bench import Bench, BenchSettings
from tensorkiln.bench.inputs import resolve_model
from tensorkiln.bench.report import render_html
from tests.helpers import tiny_model

pytest.importorskip("matplotlib", reason="reports need matplotlib (the dev extra)")


def test_report_embeds_every_plot(tmp_path: Path) -> None:
    p = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(p))
    b = Bench(resolve_model(str(p)), BenchSettings(batches=[1, 4], streams=[1, 2], duration_s=0.05, iterations=5,
                                                   warmup_s=0.0, overhead_pairs=2))
    b.sweep()
    b.budget(1e3, batches=[1, 2], streams=[1])
    b.peers(["ort", "torch"], seconds=0.1)
    b.profile(runs=2)
    data = b.to_json()
    assert data["peers"]["skipped"]["torch"].startswith("torch eager runs only zoo models")
    page = render_html(data)
    imgs = re.findall(r"<img alt='([^']+)' src='data:image/png;base64,([^']+)'>", page)
    assert [a for a, _ in imgs] == ["Throughput vs batch", "Latency vs batch", "Throughput–latency curve",
                                    "Peers side by side", "Per-layer profile"]
    for _, b64 in imgs:
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "src='http" not in page and "<script" not in page  # self-contained
    assert "Best within 1000 ms p99" in page and "torch eager runs only zoo models" in page
    assert page.count("<tr>") >= 4 + 2 + 2


def test_report_without_peers_or_budget_still_renders() -> None:
    lat = dict.fromkeys(("min", "mean", "median", "p90", "p95", "p99", "max"), 100.0) | {"cv": 0.0}
    data = {"model": "m<&>", "configs": [{"batch": 1, "streams": 1, "iterations": 3, "inferences_per_s": 10.0,
                                          "samples_per_s": 10.0, "latency_ms": lat, "power": {},
                                          "host_overhead": None}]}
    page = render_html(data)
    assert "m&lt;&amp;&gt;" in page and page.count("<img") == 3  # throughput, latency, trade-off
