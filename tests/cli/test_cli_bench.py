import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tensorkiln.bench import suite as suite_mod
from tensorkiln.cli import main
from tensorkiln.cli.cmd_bench import parse_budget
from tensorkiln.errors import OptionError
from tests.bench.qdq_net import qdq_net
from tests.helpers import tiny_model


@pytest.fixture()
def model_path(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(p))
    return p


def test_bench_json_has_every_figure(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b.json"
    assert main(["bench", str(model_path), "--batch", "1,4", "--streams", "1,2", "--duration", "0.1",
                 "--iterations", "5", "--warmup", "0", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "throughput" in text and "p99" in text and "power:" in text
    data = json.loads(out.read_text())
    assert [(c["batch"], c["streams"]) for c in data["configs"]] == [(1, 1), (1, 2), (4, 1), (4, 2)]
    c = data["configs"][2]
    assert c["iterations"] >= 5 and c["samples_per_s"] == pytest.approx(4 * c["inferences_per_s"])
    assert set(c["latency_ms"]) >= {"min", "mean", "median", "p90", "p95", "p99", "max", "cv"}
    assert c["host_overhead"]["compute_ms"] > 0 and data["configs"][1]["host_overhead"] is None
    assert data["fingerprint"]["device"] == "cpu" and data["versions"]["tensorkiln"]
    assert data["settings"]["inputs"] == "random" and len(data["load_average"]) == 3
    if data["power_source"] is None:
        assert data["power_note"].startswith("power: not readable (")
        assert c["power"]["samples_per_s_per_w"] is None


def test_bench_budget_and_compare(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(model_path), "--duration", "0.05", "--iterations", "3", "--warmup", "0",
                 "--latency-budget", "1us", "--batch", "1,2", "--compare", "ort,torch",
                 "--compare-seconds", "0.1", "--no-overhead"]) == 0
    text = capsys.readouterr().out
    assert "no configuration keeps p99 within 0.001 ms" in text
    assert "search curve" in text and "torch eager skipped" in text and "onnxruntime" in text
    assert "side by side, batch 2" in text


def test_bench_real_inputs_and_bad_flags(model_path: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "f.npz", x=np.ones((2, 4), np.float32))
    out = tmp_path / "b.json"
    assert main(["bench", str(model_path), "--inputs", str(tmp_path / "f.npz"), "--batch", "3", "--duration", "0",
                 "--iterations", "2", "--warmup", "0", "--json", str(out), "--no-overhead"]) == 0
    assert json.loads(out.read_text())["settings"]["inputs"] == "file"
    assert main(["bench", str(model_path), "--batch", "1,x"]) == 2
    assert "--batch expects integers" in capsys.readouterr().err
    assert main(["bench", str(model_path), "--compare", "tensorrt"]) == 2
    assert "unknown peer" in capsys.readouterr().err
    assert main(["bench"]) == 2


def test_parse_budget() -> None:
    assert parse_budget("7ms") == 7.0 and parse_budget("7") == 7.0
    assert parse_budget("0.5s") == 500.0 and parse_budget("700us") == pytest.approx(0.7)
    with pytest.raises(OptionError):
        parse_budget("fast")


def test_suite_prints_the_seed_columns(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(suite_mod.SUITES, "tiny", (suite_mod.SuiteModel("vad_lstm", (1, 2), "frames"),))
    assert main(["bench", "--suite", "tiny", "--duration", "0.05", "--iterations", "2", "--warmup", "0"]) == 0
    text = capsys.readouterr().out
    for col in ("batch", "samples/s", "power", "samples/s/W", "latency ms"):
        assert col in text
    assert "frames/s" in text and "vad_lstm" in text
    assert main(["bench", "--suite", "nope"]) == 2


@pytest.fixture()
def qdq_paths(tmp_path: Path) -> tuple[Path, Path]:
    clean, bad = tmp_path / "clean.onnx", tmp_path / "bad.onnx"
    onnx.save(qdq_net(), str(clean))
    onnx.save(qdq_net(corrupt="conv2"), str(bad))
    return clean, bad


def test_compare_passes_and_lists_tolerances(qdq_paths: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    clean, _ = qdq_paths
    out = tmp_path / "c.json"
    from tensorkiln.passes.pipeline import PIPELINE

    # Q/DQ kept as float ops, so the engine matches the float reference to fp32 tolerances
    float_qdq = ["--disable-pass", "fuse-qdq"] if any(n == "fuse-qdq" for n, _ in PIPELINE) else []
    assert main(["compare", str(clean), "--reference", "onnx-reference", "--batch", "2", "--json", str(out),
                 *float_qdq]) == 0
    text = capsys.readouterr().out
    assert "PASSED" in text and "would pass with" in text and "top1_match" in text
    rep = json.loads(out.read_text())["outputs"][0]
    assert rep["passed"] and rep["stats"]["cosine"] > 0.9999 and rep["name"] == "logits"


def test_compare_find_divergence_names_the_corrupted_layer(qdq_paths: tuple[Path, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    clean, bad = qdq_paths
    out = tmp_path / "d.json"
    # threshold 0.05: where Q/DQ pairs become int8 kernels, those round a few units off a float reference
    rc = main(["compare", str(bad), "--reference-model", str(clean), "--reference", "ort", "--batch", "2",
               "--find-divergence", "--threshold", "0.05", "--json", str(out)])
    assert rc == 1  # the corrupted model's logits are outside tolerance
    text = capsys.readouterr().out
    assert "FAILED" in text and "first divergence" in text and "conv2, conv2_relu" in text
    assert "conv1" not in text.split("first divergence")[1]
    first = json.loads(out.read_text())["divergence"]["first_divergence"]
    assert first["origin"][:2] == ["conv2", "conv2_relu"] and first["stats"]["rel_err"] > 0.1


def test_compare_precision_flag_is_clear(qdq_paths: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from tensorkiln import BuildConfig

    if "precision" in BuildConfig.__dataclass_fields__:
        pytest.skip("BuildConfig has a precision option in this build")
    assert main(["compare", str(qdq_paths[0]), "--precision", "int8"]) == 2
    assert "cannot build reduced-precision engines" in capsys.readouterr().err


def test_bench_engine_file_finds_its_onnx_for_peers(model_path: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    eng = tmp_path / "tiny.tkengine"
    assert main(["build", str(model_path), "-o", str(eng)]) == 0
    assert main(["bench", str(eng), "--duration", "0", "--iterations", "2", "--warmup", "0", "--no-overhead",
                 "--compare", "ort", "--compare-seconds", "0.05"]) == 0
    text = capsys.readouterr().out
    assert "(engine)" in text and "onnxruntime" in text and "skipped" not in text


def test_compare_int8_build_dequantizes_its_taps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tensorkiln import BuildConfig

    if "precision" not in BuildConfig.__dataclass_fields__:
        pytest.skip("this build has no precision option")
    p = tmp_path / "float.onnx"
    onnx.save(qdq_net(quantized=False), str(p))
    out = tmp_path / "i.json"
    # --strict: int8 on every layer (without it the builder keeps layers fp32 where int8 times slower)
    assert main(["compare", str(p), "--precision", "int8", "--strict", "--reference", "fp32", "--batch", "4",
                 "--calibration-batches", "4", "--find-divergence", "--all-taps", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["precision"] == "int8" and data["outputs"][0]["passed"]  # within the int8 default 0.1 tolerances
    taps = data["divergence"]["taps"]
    int8_steps = [t for t in taps if t["op"].startswith("tensorkiln::Q")]
    assert int8_steps, "the int8 build has int8 steps"
    # uint8 codes handed between int8 steps are dequantized before comparing with fp32 tensors
    assert all(t["stats"]["cosine"] > 0.99 and t["stats"]["rel_err"] < 0.2 for t in taps)
