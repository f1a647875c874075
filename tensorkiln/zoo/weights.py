"""Random Gaussian weights from a fixed seed, scaled so activations stay O(1) at any depth.

Every parameter of a zoo network is overwritten here (a parameter this module does not
know raises), so a network's weights depend only on its seed, never on torch's global
random state. BatchNorm layers get random gamma/beta, and running statistics measured on
one random batch and then perturbed: the folded scale and shift differ per channel (BN
folding is exercised), while activations stay normalised through ResNet-50's depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
M = TypeVar("M", bound=nn.Module)


def uninitialized(factory: Callable[[], M]) -> M:
    """``factory()`` built on the meta device, then given uninitialized CPU storage.

    Skips torch's default initialisation (seconds for VGG-19 or BERT); ``gaussian_init``
    then sets every parameter and buffer.
    """
    with torch.device("meta"):
        model = factory()
    return model.to_empty(device="cpu")


def gaussian_init(
    model: nn.Module,
    seed: int,
    *,
    gain: float = 2.0,
    bias_std: float = 0.05,
    embedding_std: float = 1.0,
    lstm_scale: float = 1.0,
) -> None:
    """Overwrite all parameters of ``model`` with seeded Gaussian values.

    Conv and Linear weights get std ``sqrt(gain / fan_in)`` (``gain=2`` is Kaiming's for
    ReLU networks, ``gain=1`` keeps a linear layer's output variance equal to its
    input's); LSTM weights get std ``lstm_scale/sqrt(hidden)`` (above 1 where the inputs
    are small, else stacked LSTMs' outputs shrink towards zero).
    """
    gen = torch.Generator().manual_seed(seed)
    done: set[int] = set()

    def normal(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=gen) * std + mean)
        done.add(id(t))

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()  # in_channels / groups * kernel size
                normal(m.weight, math.sqrt(gain / fan_in))
                if m.bias is not None:
                    normal(m.bias, bias_std)
            elif isinstance(m, _BATCHNORMS):
                normal(m.weight, 0.2, mean=1.0)
                normal(m.bias, 0.1)
                m.reset_running_stats()
            elif isinstance(m, nn.LayerNorm):
                normal(m.weight, 0.1, mean=1.0)
                normal(m.bias, 0.05)
            elif isinstance(m, nn.Embedding):
                normal(m.weight, embedding_std)
            elif isinstance(m, nn.LSTM):
                for pname, p in m.named_parameters():
                    std = lstm_scale / math.sqrt(m.hidden_size) if pname.startswith("weight") else bias_std
                    normal(p, std)
            elif any(True for _ in m.buffers(recurse=False)):
                raise RuntimeError(f"gaussian_init does not know the buffers of {m}")
    missed = [n for n, p in model.named_parameters() if id(p) not in done]
    if missed:
        raise RuntimeError(f"gaussian_init does not know how to set {missed}")


def calibrate_batchnorm(model: nn.Module, example: torch.Tensor, seed: int) -> None:
    """Set BatchNorm running statistics from one batch, then perturb them per channel.

    ``running_mean = batch_mean + 0.1 * batch_std * N(0, 1)`` and
    ``running_var = batch_var * exp(0.2 * N(0, 1))``; leaves the model in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, _BATCHNORMS)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly its statistics
    model.train()
    with torch.no_grad():
        model(example)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
            n = m.num_features
            assert m.running_mean is not None and m.running_var is not None
            std = m.running_var.sqrt()
            m.running_mean.add_(0.1 * std * torch.randn(n, generator=gen))
            m.running_var.mul_(torch.exp(0.2 * torch.randn(n, generator=gen)))
