"""Dropout with cheap masks on the CPU, for the training loops.

On this repository's 2-core CPU, a MiniLM training step spent about 18% of its time drawing dropout masks: torch's
CPU ``bernoulli_`` draws one 32-bit number per element, and scaled-dot-product attention with dropout falls back to
that path for every attention-probability tensor (batch x heads x length x length). Here each mask element takes 15
random bits: one 64-bit draw of torch's generator feeds four elements, and an element is dropped when its 15 bits fall
below ``round(p * 32768)`` (p = 0.1 drops 0.100006). Same distribution as ``nn.Dropout`` up to that rounding, the same
inverted scaling, seeded by the same generator (``set_seed``), about three times faster per mask.

:func:`fast_dropout` swaps a model's ``nn.Dropout`` modules for :class:`FastDropout` and its attention for
:func:`attention`, which computes what SDPA's math path computes with such a mask. Outside training, with dropout 0
or off the CPU, :func:`attention` is SDPA itself; the returned callable puts the model's own modules and SDPA back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION = "ccguard_sdpa"  # the attention implementation's registered name
_BITS = 32768  # 15 random bits per mask element


def _bits(shape: torch.Size | tuple[int, ...], device: torch.device | str) -> torch.Tensor:
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_().view(torch.int16)[:n]
    # The top int16 of each draw has 15 random bits (random_ draws in [0, 2**63)), the others 16: keep 15 of each.
    return bits.bitwise_and_(_BITS - 1).view(shape)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A boolean mask of ``shape``, each element False (dropped) with probability ``p`` (to 1/32768)."""
    return _bits(shape, device) >= round(p * _BITS)


def drop_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """``~keep_mask(shape, p)``, without the extra pass."""
    return _bits(shape, device) < round(p * _BITS)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout`` with :func:`keep_mask`'s masks on the CPU; ``F.dropout`` itself elsewhere."""
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training=True)
    return torch.where(keep_mask(x.shape, p, x.device), x * (1.0 / (1.0 - p)), 0.0)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same scaling) with :func:`dropout`'s masks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
    dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function: SDPA, except when training with dropout on the CPU, where it computes
    softmax(q k^T * scaling + mask) with :func:`keep_mask`'s dropout, then times v, as SDPA's math path would."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if dropout <= 0.0 or query.device.type != "cpu" or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    q_len, kv_len = query.shape[2], key.shape[2]
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    # Scalings go on q and v (batch x heads x length x head size), not on the length x length tensors: fewer passes.
    scores = torch.matmul(query * scale, key.transpose(-1, -2))
    lowest = torch.finfo(scores.dtype).min
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    bias = None
    if attention_mask is not None:
        mask = attention_mask[:, :, :, :kv_len]
        bias = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device).masked_fill_(~mask, lowest) \
            if mask.dtype == torch.bool else mask
    elif causal and q_len > 1:
        # SDPA's is_causal: query i sees keys up to i, aligned to the end of the keys (a cache's earlier tokens).
        bias = torch.full((q_len, kv_len), lowest, dtype=scores.dtype, device=scores.device).triu_(kv_len - q_len + 1)
    if bias is not None:
        scores = scores + bias
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = probs.masked_fill(drop_mask(probs.shape, dropout, probs.device), 0.0)
    out = torch.matmul(probs, value * (1.0 / (1.0 - dropout)))
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def fast_dropout(model: nn.Module) -> Callable[[], None]:
    """Give ``model`` :class:`FastDropout` modules and, where it runs on SDPA, :func:`attention`. Returns a callable
    that puts its ``nn.Dropout`` modules and SDPA back (call it when training ends)."""
    swapped: list[tuple[nn.Module, str, nn.Dropout]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
                swapped.append((parent, name, child))
    switched = [m for m in model.modules() if hasattr(m, "set_attn_implementation")
                and getattr(getattr(m, "config", None), "_attn_implementation", None) == "sdpa"]
    if switched:
        _register()
    for m in switched:
        m.set_attn_implementation(ATTENTION)

    def restore() -> None:
        for parent, name, child in swapped:
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)
        for m in switched:
            m.set_attn_implementation("sdpa")

    return restore
