"""Pieces both training loops share."""

from __future__ import annotations

from typing import Any


def optimizer_step(accelerator: Any, model: Any, opt: Any, sched: Any, loss: Any, ema: float | None) -> float:
    """Backward, clip, step, schedule; returns the updated loss moving average."""
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad()
    return loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
