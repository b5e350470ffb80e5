"""Training arguments, serialisable so every artifact records how it was trained."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class TrainArgs:
    """Hyper-parameters of one classifier's training run."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainArgs:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training args: {', '.join(unknown)}")
        return cls(**d)
