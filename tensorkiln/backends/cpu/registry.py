"""The CPU backend's op registry: (domain, op_type) → kernel factory.

Each op family lives in its own module with an explicit ``KERNELS`` dict; this file
lists the families, one line each.
"""

from __future__ import annotations

from tensorkiln.backends.cpu import (
    ops_activation,
    ops_attention,
    ops_cast,
    ops_contrib,
    ops_contrib_attn,
    ops_contrib_quant,
    ops_control,
    ops_elementwise,
    ops_extra,
    ops_fused,
    ops_image,
    ops_index,
    ops_int8,
    ops_layout,
    ops_linalg,
    ops_loss,
    ops_misc,
    ops_nn,
    ops_norm,
    ops_pool,
    ops_qlinear,
    ops_quant,
    ops_reduce,
    ops_rnn,
    ops_sample,
    ops_select,
    ops_signal,
    ops_tensor,
)
from tensorkiln.backends.cpu.base import Factory

FAMILIES: list[tuple[str, dict[str, Factory]]] = [
    ("", ops_elementwise.KERNELS),
    ("", ops_cast.KERNELS),
    ("", ops_linalg.KERNELS),
    ("", ops_activation.KERNELS),
    ("", ops_reduce.KERNELS),
    ("", ops_tensor.KERNELS),
    ("", ops_index.KERNELS),
    ("", ops_image.KERNELS),
    ("", ops_layout.KERNELS),
    ("", ops_select.KERNELS),
    ("", ops_sample.KERNELS),
    ("", ops_nn.KERNELS),
    ("", ops_pool.KERNELS),
    ("", ops_norm.KERNELS),
    ("", ops_rnn.KERNELS),
    ("", ops_control.KERNELS),
    ("", ops_quant.KERNELS),
    ("", ops_qlinear.KERNELS),
    ("", ops_misc.KERNELS),
    ("", ops_contrib.KERNELS),
    ("", ops_contrib_attn.KERNELS),
    ("", ops_contrib_quant.KERNELS),
    ("", ops_fused.KERNELS),
    ("", ops_int8.KERNELS),
    ("", ops_attention.KERNELS),
    ("", ops_loss.KERNELS),
    ("", ops_signal.KERNELS),
    ("", ops_extra.KERNELS),
]


def build_registry() -> dict[tuple[str, str], Factory]:
    reg: dict[tuple[str, str], Factory] = {}
    for domain, table in FAMILIES:
        for op, factory in table.items():
            dom, _, name = op.rpartition("::")
            key = (dom or domain, name)
            if key in reg:
                raise RuntimeError(f"op {op} registered twice")
            reg[key] = factory
    return reg


REGISTRY = build_registry()
