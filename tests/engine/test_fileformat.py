from pathlib import Path

import numpy as np
import pytest

import tensorkiln
from tensorkiln.engine.fileformat import MAGIC
from tensorkiln.errors import EngineFileError
from tests.helpers import tiny_model, tiny_reference


@pytest.fixture()
def engine_file(tmp_path: Path) -> Path:
    eng = tensorkiln.build(tiny_model())
    p = tmp_path / "tiny.tkengine"
    eng.save(p)
    return p


def test_save_load_roundtrip_gives_same_outputs(engine_file: Path) -> None:
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    loaded = tensorkiln.load(engine_file)
    np.testing.assert_allclose(loaded.run({"x": x})["y"], tiny_reference(x, tiny_model()), rtol=1e-6)
    assert [s.name for s in loaded.inputs] == ["x"]
    assert loaded.inputs[0].shape == ("batch", 4)


def test_file_starts_with_magic(engine_file: Path) -> None:
    assert engine_file.read_bytes().startswith(MAGIC)


def test_truncated_file_is_rejected(engine_file: Path) -> None:
    data = engine_file.read_bytes()
    engine_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(EngineFileError, match="truncated"):
        tensorkiln.load(engine_file)


def test_flipped_byte_is_detected(engine_file: Path) -> None:
    data = bytearray(engine_file.read_bytes())
    data[len(data) - 100] ^= 0xFF
    engine_file.write_bytes(bytes(data))
    with pytest.raises(EngineFileError, match="corrupt"):
        tensorkiln.load(engine_file)


def test_wrong_version_is_rejected(engine_file: Path) -> None:
    data = bytearray(engine_file.read_bytes())
    data[len(MAGIC)] = 99
    engine_file.write_bytes(bytes(data))
    with pytest.raises(EngineFileError, match="format version 99"):
        tensorkiln.load(engine_file)


def test_not_an_engine(tmp_path: Path) -> None:
    p = tmp_path / "x.tkengine"
    p.write_bytes(b"PK\x03\x04 a zip, not an engine")
    with pytest.raises(EngineFileError, match="not a tensorkiln engine"):
        tensorkiln.load(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EngineFileError, match="does not exist"):
        tensorkiln.load(tmp_path / "none.tkengine")


def test_loading_never_unpickles(engine_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("pickle must never be used to load engines")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    tensorkiln.load(engine_file)
