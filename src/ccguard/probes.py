"""Linear probes on a local upstream model's own hidden states, ensembled with the streaming output classifier
(Constitutional Classifiers++, arXiv 2601.04603).

When the guarded model runs in this process (``ccguard serve --upstream local``), its decoder layers already compute
a hidden state for every generated token. Forward hooks read those states on the selected layers as the model
generates; a linear probe maps them to a per-token logit. No extra forward pass of the upstream is made.

- **Features.** The outputs of ``spec.layers`` (1-based decoder layers), concatenated and standardised.
- **Smoothing.** The stream's probe score is the running maximum of the mean probe logit over the last
  ``spec.window`` tokens, so one odd token does not halt a stream.
- **Ensemble.** The output score is ``sigmoid(w * probe_logit + (1 - w) * classifier_logit)`` over the two running
  maxima, calibrated end to end at the guard's output target FPR (``Policy.output_score``).
- **Training.** ``ccguard probe`` teacher-forces the guard's output training exchanges through the upstream with the
  same hooks (so features match what streaming sees) and fits a class-balanced logistic regression on tokens.

The probe's weights are a few thousand floats in ``probe/probe.safetensors``; guard.json lists it under ``stages``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ccguard.errors import CcguardError
from ccguard.heads import LinearHead

PROBE_DIR = "probe"


class ProbeSpec(BaseModel):
    """Which upstream and layers a probe reads, and how its scores are smoothed and weighed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    upstream: str = Field(default="smollm2", description="The local upstream model (name or path) the probe reads.")
    layers: tuple[int, ...] = Field(default=(16, 24, 30), description="1-based decoder layers whose outputs are read.")
    window: int = Field(default=16, ge=1, description="Tokens in the sliding mean of probe logits.")
    weight: float = Field(default=0.5, ge=0.0, le=1.0, description="Weight of the probe logit in the ensemble.")
    max_tokens: int = Field(default=256, ge=8, description="Response tokens read per training exchange.")
    c: float = Field(default=0.05, gt=0.0, description="Inverse L2 strength of the logistic regression.")


class ProbeModel(LinearHead):
    """A trained probe: standardisation and a linear map from concatenated layer outputs to a per-token logit."""

    def __init__(self, spec: ProbeSpec, mean: np.ndarray, scale: np.ndarray, weight: np.ndarray, bias: float) -> None:
        super().__init__(mean, scale, weight, bias)
        self.spec = spec

    def save(self, out_dir: Path, extra: dict[str, Any] | None = None) -> None:  # type: ignore[override]
        super().save(out_dir / "probe.safetensors")
        from ccguard.records import atomic_write_text

        atomic_write_text(out_dir / "probe.json", json.dumps({"spec": self.spec.model_dump(mode="json"), **(extra or {})}, indent=2))

    @classmethod
    def load(cls, path: Path) -> ProbeModel:  # type: ignore[override]
        meta_path, weights = Path(path) / "probe.json", Path(path) / "probe.safetensors"
        if not meta_path.is_file() or not weights.is_file():
            raise CcguardError("not a probe directory (probe.json or probe.safetensors missing)", where=str(path))
        spec = ProbeSpec.model_validate(json.loads(meta_path.read_text())["spec"])
        head = LinearHead.load(weights)
        return cls(spec, head.mean, head.scale, head.weight, head.bias)


class ProbeTrack:
    """One stream's probe state: the sliding mean of token logits and its running maximum. Not thread-safe."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.logits: list[float] = []
        self.max_logit: float | None = None

    def add(self, logits: Sequence[float]) -> None:
        for x in logits:
            self.logits.append(float(x))
            recent = self.logits[-self.window :]
            m = sum(recent) / len(recent)
            self.max_logit = m if self.max_logit is None else max(self.max_logit, m)

    @property
    def score(self) -> float | None:
        return None if self.max_logit is None else 1.0 / (1.0 + math.exp(-self.max_logit))


def exchange_score(logits: Sequence[float], window: int) -> float | None:
    """What a ``ProbeTrack`` reports after all of ``logits``."""
    t = ProbeTrack(window)
    t.add(logits)
    return t.score


class LayerTap:
    """Forward hooks on a causal LM's decoder layers that keep each call's outputs (``[batch, tokens, hidden]``).

    ``on_step`` (optional) is called after the last tapped layer of each forward call with the features of that
    call, concatenated in layer order."""

    def __init__(self, model: Any, layers: Sequence[int], on_step: Any = None) -> None:
        blocks = _decoder_layers(model)
        if not layers or min(layers) < 1 or max(layers) > len(blocks) or list(layers) != sorted(set(layers)):
            # Increasing: a step's features are complete when the deepest tapped layer has run.
            raise CcguardError(f"must be increasing and within 1..{len(blocks)}, not {list(layers)}", where="probe layers")
        self.layers = list(layers)
        self._blocks = blocks
        self._on_step = on_step
        self._current: dict[int, Any] = {}
        self._handles: list[Any] = []

    def _hook(self, layer: int) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            h = output[0] if isinstance(output, tuple) else output
            self._current[layer] = h.detach()
            if layer == self.layers[-1] and len(self._current) == len(self.layers):
                feats = np.concatenate([self._current[x].float().cpu().numpy() for x in self.layers], axis=-1)
                self._current = {}
                if self._on_step is not None:
                    self._on_step(feats)
        return hook

    def __enter__(self) -> LayerTap:
        self._handles = [self._blocks[x - 1].register_forward_hook(self._hook(x)) for x in self.layers]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._current = [], {}


def _decoder_layers(model: Any) -> Any:
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise CcguardError(f"cannot find the decoder layers of {type(model).__name__} for a probe")


def chat_ids(tok: Any, prompt: str) -> Any:
    """The prompt as the local backend feeds it (chat template with the generation prompt)."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True)["input_ids"]
    return tok(f"user: {prompt}\nassistant:", return_tensors="pt")["input_ids"]


def response_features(model: Any, tok: Any, prompt: str, response_ids: Sequence[int], layers: Sequence[int]) -> np.ndarray:
    """Teacher-forced features of each response token (the hidden states streaming would read), ``[n, D]``."""
    import torch

    p = chat_ids(tok, prompt)
    ids = torch.cat([p, torch.tensor([list(response_ids)], dtype=p.dtype)], 1)
    got: list[np.ndarray] = []
    with LayerTap(model, layers, got.append), torch.inference_mode():
        model(ids)
    return got[0][0, p.shape[1] :]


def exchange_features(model: Any, tok: Any, prompt: str, response: str, spec: ProbeSpec) -> np.ndarray:
    """``response_features`` of an exchange's response, cut to ``spec.max_tokens`` tokens as the probe was trained;
    ``[0, 1]`` for an empty response."""
    ids = tok(response, add_special_tokens=False)["input_ids"][: spec.max_tokens]
    return response_features(model, tok, prompt, ids, spec.layers) if ids else np.zeros((0, 1), dtype=np.float32)
