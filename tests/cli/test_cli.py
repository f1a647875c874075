import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tensorkiln.cli import main
from tests.helpers import tiny_model, tiny_reference


@pytest.fixture()
def model_path(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(p))
    return p


def test_build_run_inspect(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eng = tmp_path / "tiny.tkengine"
    assert main(["build", str(model_path), "-o", str(eng)]) == 0
    assert eng.exists()
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.savez(tmp_path / "feeds.npz", x=x)
    out = tmp_path / "out.npz"
    assert main(["run", str(eng), "--inputs", str(tmp_path / "feeds.npz"), "--save-outputs", str(out)]) == 0
    with np.load(out) as z:
        np.testing.assert_allclose(z["y"], tiny_reference(x, tiny_model()), rtol=1e-6)
    assert main(["inspect", str(eng)]) == 0
    text = capsys.readouterr().out
    assert "FusedGemm" in text and "op histogram" in text and "add_bias" in text


def test_run_with_random_inputs_and_shapes(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(model_path), "--shapes", "x:7x4"]) == 0
    assert "[7, 3]" in capsys.readouterr().out


def test_bad_shapes_flag_is_a_clear_error(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(model_path), "--shapes", "x:7xfour"]) == 2
    assert "dims must be integers" in capsys.readouterr().err


def test_wrong_feed_file_gives_user_error(model_path: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 5), np.float32))
    assert main(["run", str(model_path), "--inputs", str(tmp_path / "bad.npz")]) == 2
    assert "expects size 4 on axis 1" in capsys.readouterr().err


def test_malformed_model_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    assert main(["inspect", str(bad)]) == 2
    assert "error" in capsys.readouterr().err


def test_python_dash_m_is_the_same_program() -> None:
    r = subprocess.run([sys.executable, "-m", "tensorkiln", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("tensorkiln ")


def test_build_with_profile_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.runtime.test_concurrency import conv_model

    model = tmp_path / "c.onnx"
    onnx.save(conv_model(), str(model))
    eng = tmp_path / "c.tkengine"
    assert main(["build", str(model), "-o", str(eng), "--min-shapes", "x:1x3x12x12",
                 "--opt-shapes", "x:2x3x12x12", "--max-shapes", "x:4x3x12x12"]) == 0
    assert main(["run", str(eng), "--shapes", "x:4x3x12x12"]) == 0
    assert main(["run", str(eng), "--shapes", "x:5x3x12x12"]) == 2
    assert "outside every optimization profile" in capsys.readouterr().err
    assert main(["build", str(model), "-o", str(eng), "--min-shapes", "x:1x3x12x12"]) == 2
    assert "needs min, opt and max" in capsys.readouterr().err
