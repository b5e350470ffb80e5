"""Training arguments, serialisable so every artifact records how it was trained."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Self


class _Serialisable:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training args: {', '.join(unknown)}")
        return cls(**d)


def _without_defaults(d: dict[str, Any], **later: Any) -> dict[str, Any]:
    """``d`` without the fields added later that still hold their defaults, so guards trained before those fields
    existed keep their fingerprint."""
    return {k: v for k, v in d.items() if k not in later or v != later[k]}


@dataclass(frozen=True)
class TrainArgs(_Serialisable):
    """Hyper-parameters of the input classifier's training run."""

    backbone: str = "minilm"
    num_layers: int | None = None  # truncate the backbone (smoke runs); None keeps all layers
    max_len: int = 128
    stride: int = 96
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 8e-5
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    category_loss_weight: float = 0.3
    seed: int = 0
    max_examples: int | None = None
    # Mixed precision of the forward pass: 'auto' uses bf16 autocast where the hardware has it natively.
    precision: str = "auto"
    freeze_embeddings: bool = False  # keep the backbone's token embeddings as pretrained (large vocabularies)
    freeze_layers: int = 0  # keep the embeddings and this many lower layers as pretrained (a cheaper step)
    # Learn less from prompts whose style alone gives their label away (ccguard.train.debias); 0 is off.
    debias: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return _without_defaults(asdict(self), freeze_embeddings=False, freeze_layers=0, debias=0.0)


@dataclass(frozen=True)
class OutputTrainArgs(_Serialisable):
    """Hyper-parameters of the streaming output classifier's training run.

    The per-prefix prediction is ``(1 - w) * p_t + w * max_{s<=t} p_s``; ``w`` rises linearly from ``cummax_start``
    to ``cummax_end`` over the first ``cummax_ramp`` fraction of training, then stays.
    """

    backbone: str = "minilm"
    num_layers: int | None = None
    prompt_tokens: int = 64
    response_tokens: int = 128
    chunk_tokens: int = 16
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    lr: float = 8e-5
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    cummax_start: float = 0.0
    cummax_end: float = 1.0
    cummax_ramp: float = 0.6
    ntp_lambda: float = 0.0  # next-token-prediction regulariser; only for backbones with an LM head
    seed: int = 0
    max_examples: int | None = None
    # Mixed precision of the forward pass: 'auto' uses bf16 autocast where the hardware has it natively.
    precision: str = "auto"
    freeze_layers: int = 0  # keep the embeddings and this many lower layers as pretrained (a cheaper step)
    # Learn less from responses whose style alone gives their label away (ccguard.train.debias); 0 is off.
    debias: float = 0.0
    # Start the backbone from the run's trained input classifier's encoder instead of the pretrained weights (same
    # backbone only). A trial: at half the steps it generalised no better than the pretrained start (design/022).
    init_from_input: bool = False
    # Score every paragraph after the first in a window of its own as well (OutputSpec.paragraph_windows). A scoring
    # rule, not a training one: toggling it re-calibrates without retraining (design/040).
    paragraph_windows: bool = True

    def to_dict(self) -> dict[str, Any]:
        return _without_defaults(asdict(self), freeze_layers=0, debias=0.0, init_from_input=False, paragraph_windows=True)

    def cummax_weight(self, step: int, total: int) -> float:
        ramp = max(1.0, self.cummax_ramp * total)
        frac = min(1.0, step / ramp)
        return self.cummax_start + (self.cummax_end - self.cummax_start) * frac
