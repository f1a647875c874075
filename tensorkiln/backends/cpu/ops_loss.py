"""CPU kernels: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Input ``(N, C, d1, ..., dk)``, target ``(N, d1, ..., dk)`` of class indices. An element whose
target equals ``ignore_index`` contributes nothing: its loss is 0 and its weight is 0, so
``mean`` divides the weighted sum by the total weight of the elements that are not ignored
(with no ``weight`` input every class weighs 1). Reductions: ``none``, ``sum``, ``mean``.
SoftmaxCrossEntropyLoss applies log-softmax over axis 1 first and can also return it.
"""

from __future__ import annotations

import torch

from tensorkiln.backends.cpu.base import BuildContext, Factory, Kernel, attr, unsupported
from tensorkiln.ir import Node

Tensor = torch.Tensor

_REDUCTIONS = ("none", "sum", "mean")


def _nll(
    logp: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int | None, reduction: str
) -> Tensor:
    if logp.dim() < 2:
        raise ValueError(f"input must have shape (N, C, ...), got {tuple(logp.shape)}")
    c = logp.shape[1]
    t = target.to(torch.int64)
    ignored = (t == ignore_index) if ignore_index is not None else None
    # an ignored target may be out of range (e.g. ignore_index=-100): read a safe class
    t_safe = t.clamp(0, c - 1)
    picked = -torch.gather(logp, 1, t_safe.unsqueeze(1)).squeeze(1)
    zero = torch.zeros((), dtype=logp.dtype)
    if ignored is not None:
        picked = torch.where(ignored, zero, picked)
    if weight is None and ignored is None:
        if reduction == "none":
            return picked
        return picked.sum() if reduction == "sum" else picked.mean()
    w = weight.to(logp.dtype)[t_safe] if weight is not None else torch.ones_like(picked)
    if ignored is not None:
        w = torch.where(ignored, zero, w)
    loss = picked * w if weight is not None else picked
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / w.sum()


def _reduction(node: Node) -> str:
    r = attr(node, "reduction", "mean")
    if r not in _REDUCTIONS:
        raise unsupported(node, f"reduction={r!r} (expected one of {', '.join(_REDUCTIONS)})")
    return r


def _ignore_index(node: Node) -> int | None:
    ii = attr(node, "ignore_index")
    return None if ii is None else int(ii)


def _nll_loss(node: Node, ctx: BuildContext) -> Kernel:
    reduction = _reduction(node)
    ii = _ignore_index(node)

    def k(x: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        return _nll(x, target, weight, ii, reduction)

    return k


def _softmax_cross_entropy_loss(node: Node, ctx: BuildContext) -> Kernel:
    reduction = _reduction(node)
    ii = _ignore_index(node)
    want_log_prob = len(node.outputs) >= 2

    def k(x: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        if x.dim() < 2:
            raise ValueError(f"scores must have shape (N, C, ...), got {tuple(x.shape)}")
        logp = torch.log_softmax(x, 1)
        loss = _nll(logp, target, weight, ii, reduction)
        if want_log_prob:
            return loss, logp
        return loss

    return k


KERNELS: dict[str, Factory] = {
    "NegativeLogLikelihoodLoss": _nll_loss,
    "SoftmaxCrossEntropyLoss": _softmax_cross_entropy_loss,
}
