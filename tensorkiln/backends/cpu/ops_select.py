"""CPU kernels: selection operators (TopK, Unique, NonMaxSuppression)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tensorkiln.backends.cpu.base import Factory, Kernel, attr, has_input, unsupported
from tensorkiln.backends.cpu.ops_tensor import const_ints, norm_axis
from tensorkiln.ir import Node

# ---------------------------------------------------------------------------- TopK


_TOPK_FAST = (torch.float32, torch.float64, torch.int32, torch.int64)


def _topk_partial(x: torch.Tensor, k: int, a: int, largest: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """torch.topk, then ties put in index order; None when a tie straddles the k-th place."""
    vals, idx = torch.topk(x, k, dim=a, largest=largest, sorted=True)
    kth = vals.narrow(a, k - 1, 1)
    if not torch.equal((x == kth).sum(a), (vals == kth).sum(a)) or bool(torch.isnan(kth).any()):
        return None  # the selection itself may hold a higher index than a tied left-out one
    idx, p = idx.sort(dim=a)
    vals, q = vals.gather(a, p).sort(dim=a, descending=largest, stable=True)
    return vals, idx.gather(a, q)


def _topk(node: Node, ctx: Any) -> Kernel:
    axis = int(attr(node, "axis", -1))
    largest = bool(attr(node, "largest", 1))
    if node.opset < 10:
        kc: int | None = int(attr(node, "k"))
    else:
        kl = const_ints(node, 1)
        kc = kl[0] if kl else None

    def k(x: torch.Tensor, kk: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        kv = kc if kc is not None else int(kk.reshape(-1)[0].item())  # type: ignore[union-attr]
        a = norm_axis(axis, x.dim())
        if kv > x.shape[a] or kv < 0:
            raise ValueError(f"TopK k={kv} is out of range for axis of size {x.shape[a]}")
        if kv == 1 and not x.dtype.is_complex:
            # argmax/argmin return the first occurrence, like a stable sort
            i = (x.argmax if largest else x.argmin)(dim=a, keepdim=True)
            return torch.gather(x, a, i), i
        if kv * 8 <= x.shape[a] and x.dtype in _TOPK_FAST:
            r = _topk_partial(x, kv, a, largest)
            if r is not None:
                return r
        # a stable sort keeps ties in index order (torch.topk does not promise that)
        vals, idx = torch.sort(x, dim=a, descending=largest, stable=True)
        return vals.narrow(a, 0, kv), idx.narrow(a, 0, kv)

    return k


# ---------------------------------------------------------------------------- Unique


def _unique(node: Node, ctx: Any) -> Kernel:
    axis = attr(node, "axis")
    sort = bool(attr(node, "sorted", 1))
    n_out = len(node.outputs)

    def k(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if axis is None:
            y, inv, cnt = torch.unique(x.reshape(-1), sorted=True, return_inverse=True, return_counts=True)
            a = 0
        else:
            a = norm_axis(int(axis), x.dim())
            y, inv, cnt = torch.unique(x, sorted=True, return_inverse=True, return_counts=True, dim=a)
        inv = inv.reshape(-1)
        if n_out == 1 and sort:
            return (y,)
        n, u = inv.numel(), cnt.numel()
        first = torch.full((u,), n, dtype=torch.int64)
        first = first.scatter_reduce(0, inv, torch.arange(n), "amin", include_self=True)
        if not sort:
            order = torch.argsort(first)
            y = y.index_select(a, order)
            first = first[order]
            cnt = cnt[order]
            rank = torch.empty_like(order)
            rank[order] = torch.arange(u)
            inv = rank[inv]
        return (y, first, inv, cnt)[:n_out]

    return k


# ---------------------------------------------------------------------------- NonMaxSuppression


def _corners(boxes: np.ndarray, center_point_box: int) -> tuple[np.ndarray, ...]:
    """(x_min, y_min, x_max, y_max) per box, following the ONNX reference."""
    if center_point_box == 0:
        y1, x1, y2, x2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
        return np.minimum(x1, x2), np.minimum(y1, y2), np.maximum(x1, x2), np.maximum(y1, y2)
    xc, yc, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    return xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2


def _nms_one(
    corners: tuple[np.ndarray, ...],
    scores: np.ndarray,
    max_out: int,
    iou_thr: float,
    score_thr: float | None,
) -> list[int]:
    cand = np.arange(scores.shape[0])
    if score_thr is not None:
        cand = cand[scores > score_thr]
    if cand.size == 0 or max_out <= 0:
        return []
    # highest score first; ties: lower box index first
    order = cand[np.argsort(-scores[cand], kind="stable")]
    x0, y0, x1, y1 = (c[order] for c in corners)
    area = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(order.size, dtype=bool)
    selected: list[int] = []
    for i in range(order.size):
        if suppressed[i]:
            continue
        selected.append(int(order[i]))
        if len(selected) >= max_out:
            break
        # suppress the later boxes overlapping box i (the reference's rules, float32 math)
        iw = np.minimum(x1[i], x1) - np.maximum(x0[i], x0)
        ih = np.minimum(y1[i], y1) - np.maximum(y0[i], y0)
        inter = iw * ih
        union = area[i] + area - inter
        ok = (iw > 0) & (ih > 0) & (inter > 0) & (area[i] > 0) & (area > 0) & (union > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            suppressed |= ok & (inter / np.where(ok, union, 1) > iou_thr)
    return selected


def _non_max_suppression(node: Node, ctx: Any) -> Kernel:
    cpb = int(attr(node, "center_point_box", 0))
    if cpb not in (0, 1):
        raise unsupported(node, f"center_point_box={cpb}")

    def scalar(t: torch.Tensor | None) -> float | None:
        if t is None or t.numel() == 0:
            return None
        return t.reshape(-1)[0].item()

    has_score = has_input(node, 4)

    def k(
        boxes: torch.Tensor,
        scores: torch.Tensor,
        max_out: torch.Tensor | None = None,
        iou: torch.Tensor | None = None,
        score_thr: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mo = scalar(max_out)
        max_boxes = max(int(mo), 0) if mo is not None else 0
        iou_thr = scalar(iou)
        st = scalar(score_thr) if has_score else None
        b = boxes.detach().to(torch.float64).numpy() if boxes.dtype == torch.float16 else boxes.numpy()
        s = scores.numpy()
        rows: list[tuple[int, int, int]] = []
        if max_boxes > 0:
            for bi in range(s.shape[0]):
                corners = _corners(b[bi], cpb)
                for ci in range(s.shape[1]):
                    for box in _nms_one(corners, s[bi, ci], max_boxes, iou_thr or 0.0, st):
                        rows.append((bi, ci, box))
        if not rows:
            return torch.zeros((0, 3), dtype=torch.int64)
        return torch.tensor(rows, dtype=torch.int64)

    return k


KERNELS: dict[str, Factory] = {
    "TopK": _topk,
    "Unique": _unique,
    "NonMaxSuppression": _non_max_suppression,
}
