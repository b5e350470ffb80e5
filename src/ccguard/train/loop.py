"""Pieces both training loops share."""

from __future__ import annotations

from typing import Any

from ccguard.classifiers.backbone import resolve_precision


def optimizer_step(accelerator: Any, model: Any, opt: Any, sched: Any, loss: Any, ema: float | None) -> float:
    """Backward, clip, step, schedule; returns the updated loss moving average."""
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad()
    return loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()


def make_accelerator(precision: str) -> tuple[Any, Any]:
    """An Accelerator for device placement, and the forward-pass autocast context for ``precision`` (resolved).

    Autocast is applied here rather than through Accelerator(mixed_precision=...), whose process-wide state cannot
    change between the input and output runs of one process."""
    import contextlib
    from functools import partial

    import torch
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if resolve_precision(precision) == "bf16":
        autocast = partial(torch.autocast, device_type=accelerator.device.type, dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext
    return accelerator, autocast
