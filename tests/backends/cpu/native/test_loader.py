"""Compiling and loading the native kernels: switch-off, missing compiler, untrusted cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tensorkiln.backends.cpu import native


def test_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORKILN_NATIVE", "0")
    assert native._load("pool") is None
    assert "TENSORKILN_NATIVE=0" in native.why_unavailable("pool")


def test_no_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_compiler", lambda: None)
    assert native._load("pool") is None
    assert "no C compiler" in native.why_unavailable("pool")


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler here")
def test_cache_is_private_or_unused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lib = native._load("pool")
    assert lib is not None
    cache = tmp_path / "tensorkiln" / "native"
    (so,) = cache.glob("pool-*.so")
    assert native._private(so) and native._private(cache)
    # a cache directory others can write to is never loaded from: the source is compiled
    # into a private temporary directory instead, and nothing new appears in the cache
    os.chmod(cache, 0o777)
    so.unlink()
    assert native._load("pool") is not None
    assert not list(cache.glob("pool-*.so"))


def test_compile_error_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here")
    bad = tmp_path / "broken.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(native, "_SRC_DIR", tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert native._load("broken") is None
    assert "failed" in native.why_unavailable("broken")
