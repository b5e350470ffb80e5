"""Input classifier: an encoder with mean pooling and a linear head, scored over sliding windows and decoded views.

The head has one harmfulness logit plus one logit per harmful category (the category is a best guess, reported
only when the prompt is flagged). A long prompt is split into overlapping token windows and its score is the
maximum over windows, so a long jailbreak template cannot dilute the request it wraps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ccguard.classifiers.backbone import load_tokenizer, resolve_precision
from ccguard.errors import CcguardError
from ccguard.views import Decoder, builtin_view_names, decoded_views, decoders

Strategy = Literal["windows", "head_tail"]


@dataclass(frozen=True)
class WindowSpec:
    """How a prompt becomes model inputs."""

    max_len: int = 128
    stride: int = 96
    strategy: Strategy = "windows"
    max_windows: int = 48
    views: bool = True
    # The decoded views this classifier was trained and calibrated with, in order (recorded at training, so a view
    # plugin installed later does not change a trained guard's scores); None for classifiers from before the
    # field: ccguard's own views.
    view_names: tuple[str, ...] | None = None
    # A prompt longer than one window also gets its first and last paragraphs scored on their own, when they are
    # short: that is where a request sits in front of a pasted passage or after a jailbreak template.
    edges: bool = True


class InputModel(nn.Module):
    """Encoder + masked mean pooling + linear head: [harmful, category_1..category_C] logits."""

    def __init__(self, encoder: nn.Module, n_categories: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1 + n_categories)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


def split_windows(ids: Sequence[int], body: int, spec: WindowSpec) -> list[list[int]]:
    """Token windows of at most ``body`` tokens (special tokens excluded) covering ``ids``."""
    ids = list(ids)
    if len(ids) <= body:
        return [ids]
    if spec.strategy == "head_tail":
        half = body // 2
        return [ids[:half] + ids[-(body - half) :]]
    stride = max(1, min(spec.stride, body))
    starts = list(range(0, len(ids) - body, stride)) + [len(ids) - body]
    if len(starts) > spec.max_windows:
        # Keep the first and last windows and an even spread between them.
        idx = np.linspace(0, len(starts) - 1, spec.max_windows).round().astype(int)
        starts = [starts[i] for i in sorted(set(idx.tolist()))]
    return [ids[s : s + body] for s in starts]


_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def edge_paragraphs(text: str) -> list[str]:
    """The first and last paragraphs of a text with more than one paragraph."""
    paras = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    if len(paras) < 2:
        return []
    return [paras[0], paras[-1]]


# Padded tokens per scoring batch. On a CPU, batches of about 2,048 tokens stay in cache: against 8,192, the default
# guard scored short validation prompts in 31% less time, full 128-token windows in 16% less and validation exchanges
# in 23% less, with the same scores to 1e-5 (design/031). An accelerator wants large batches.
CPU_TOKEN_BUDGET = 2048
ACCELERATOR_TOKEN_BUDGET = 8192


def token_budget_for(device: torch.device | str) -> int:
    """The padded-token budget of one scoring batch on ``device``."""
    return CPU_TOKEN_BUDGET if torch.device(device).type == "cpu" else ACCELERATOR_TOKEN_BUDGET


def length_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices grouped shortest-first into batches whose padded size (count x longest) stays within the budget."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: lengths[k]):
        if current and (len(current) + 1) * lengths[i] > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def _special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after a single sequence (e.g. [CLS] ... [SEP])."""
    bare = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return list(full[:i]), list(full[i + len(bare) :])
    return [], []


@dataclass(frozen=True)
class Prepared:
    """One text ready for the model: each decoded view's name and its windows (token ids, special tokens added)."""

    views: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]
    texts: tuple[str, ...] = ()  # each view's text, in the same order

    @property
    def n_windows(self) -> int:
        return sum(len(ws) for _, ws in self.views)

    def view_text(self, name: str) -> str | None:
        """The text of the view called ``name`` (None when it was not kept)."""
        for (v, _), text in zip(self.views, self.texts, strict=False):
            if v == name:
                return text
        return None


@dataclass(frozen=True)
class InputScore:
    """The score of one prompt, and where it came from."""

    score: float
    category: str | None
    view: str
    window: int
    n_windows: int
    # The maximum over the raw view's windows alone: the prompt's score with decoded views turned off, from the same
    # pass (the raw view gets the same windows either way).
    raw: float | None = None


class InputClassifier:
    """A trained input classifier ready for scoring. Holds no per-request state."""

    def __init__(self, model: InputModel, tokenizer: Any, spec: WindowSpec, categories: list[str]) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.spec = spec
        self.categories = categories
        # bf16 autocast where the hardware has it (about 2x on this CPU); calibration and serving run the same path.
        self.precision = resolve_precision()
        # Set by the fast runtime: an int8 ONNX model, (ids, mask) -> logits, used instead of ``model``; windows it
        # scores at ``exact_from`` or above are scored again by ``model``, so scores near a threshold stay exact.
        self.runner: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
        self.exact_from: float | None = None
        names = spec.view_names if spec.view_names is not None else builtin_view_names()
        self._decoders: list[tuple[str, Decoder]] = decoders(names) if spec.views else []
        self._prefix, self._suffix = _special_affixes(tokenizer)

    # --- tokenisation -------------------------------------------------------------------------------------
    @property
    def body_len(self) -> int:
        return self.spec.max_len - len(self._prefix) - len(self._suffix)

    def with_specials(self, ids: Sequence[int]) -> list[int]:
        return self._prefix + list(ids) + self._suffix

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]

    def windows(self, text: str, spec: WindowSpec | None = None) -> list[list[int]]:
        """Model-ready windows (special tokens added) for one text."""
        s = spec or self.spec
        ws = split_windows(self.token_ids(text), self.body_len, s)
        if s.edges and len(ws) > 1:
            for para in edge_paragraphs(text):
                ids = self.token_ids(para)
                if 0 < len(ids) <= self.body_len // 2 and ids not in ws:
                    ws.append(ids)
        return [self.with_specials(w) for w in ws]

    def views(self, text: str) -> list[tuple[str, str]]:
        if not self._decoders:
            return [("raw", text)]
        return [(v.name, v.text) for v in decoded_views(text, self._decoders)]

    # --- inference ----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logits(self, seqs: Sequence[Sequence[int]], token_budget: int | None = None) -> np.ndarray:
        """Head logits for model-ready sequences, batched by length to limit padding (``token_budget`` padded tokens
        a batch; None: the device's, ``token_budget_for``)."""
        token_budget = token_budget or token_budget_for(self.device)
        if self.runner is None:
            return self._model_logits(seqs, token_budget)
        out = np.zeros((len(seqs), 1 + len(self.categories)), dtype=np.float32)
        for chunk in length_batches([len(s) for s in seqs], token_budget):
            ids, mask = pad_batch([seqs[j] for j in chunk], self.tokenizer.pad_token_id)
            out[chunk] = self.runner(ids.numpy(), mask.numpy())
        if self.exact_from is not None:
            redo = np.flatnonzero(out[:, 0] >= np.log(self.exact_from / (1.0 - self.exact_from)))
            if redo.size:
                out[redo] = self._model_logits([seqs[i] for i in redo], token_budget)
        return out

    @torch.inference_mode()
    def _model_logits(self, seqs: Sequence[Sequence[int]], token_budget: int) -> np.ndarray:
        out = np.zeros((len(seqs), 1 + len(self.categories)), dtype=np.float32)
        device = self.device
        for chunk in length_batches([len(s) for s in seqs], token_budget):
            ids, mask = pad_batch([seqs[j] for j in chunk], self.tokenizer.pad_token_id)
            ids, mask = ids.to(device), mask.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                out[chunk] = self.model(ids, mask).float().cpu().numpy()
        return out

    def prepare(self, text: str, spec: WindowSpec | None = None) -> Prepared:
        """Decoded views of one text and their model-ready windows, within a window budget: the raw view gets up to
        ``max_windows``, decoded views share as many again, so a prompt that triggers every decoder costs at most
        twice a plain one. Pure CPU work with no model call; callers may run it in their own thread."""
        spec = spec or self.spec
        views = self.views(text) if spec.views else [("raw", text)]
        budget = 2 * spec.max_windows
        out: list[tuple[str, list[list[int]]]] = []
        for k, (vname, vtext) in enumerate(views):
            ws = self.windows(vtext, spec)
            share = budget if k == 0 else max(1, budget // (len(views) - k))
            if len(ws) > share:
                idx = np.linspace(0, len(ws) - 1, share).round().astype(int)
                ws = [ws[i] for i in sorted(set(idx.tolist()))]
            out.append((vname, ws))
            budget -= len(ws)
            if budget <= 0:
                break
        return Prepared(tuple((v, tuple(tuple(w) for w in ws)) for v, ws in out), tuple(t for _, t in views[: len(out)]))

    def score_prepared(self, prepared: Sequence[Prepared]) -> list[InputScore]:
        """Score prepared texts in one batched pass: the maximum over decoded views and token windows."""
        seqs: list[tuple[int, ...]] = []
        slot: dict[tuple[int, ...], int] = {}  # identical windows (a view equal to raw up to its first change) score once
        owner: list[tuple[int, str, int, int, int]] = []  # (text index, view name, window index, n windows, seq row)
        for ti, p in enumerate(prepared):
            for vname, ws in p.views:
                for wi, w in enumerate(ws):
                    row = slot.setdefault(w, len(seqs))
                    if row == len(seqs):
                        seqs.append(w)
                    owner.append((ti, vname, wi, len(ws), row))
        if not seqs:
            return []
        lg = self.logits(seqs)[[o[4] for o in owner]]
        probs = 1.0 / (1.0 + np.exp(-lg[:, 0]))
        best: dict[int, int] = {}
        raw: dict[int, float] = {}
        for k, (ti, vname, *_rest) in enumerate(owner):
            if ti not in best or probs[k] > probs[best[ti]]:
                best[ti] = k
            if vname == "raw":
                raw[ti] = max(raw.get(ti, 0.0), float(probs[k]))
        out = []
        for ti in range(len(prepared)):
            k = best[ti]
            _, vname, wi, nw, _row = owner[k]
            cat = self.categories[int(np.argmax(lg[k, 1:]))] if self.categories else None
            out.append(InputScore(float(probs[k]), cat, vname, wi, nw, raw.get(ti)))
        return out

    def score(self, texts: Sequence[str], spec: WindowSpec | None = None) -> list[InputScore]:
        """Score texts: the maximum over decoded views and token windows."""
        return self.score_prepared([self.prepare(t, spec) for t in texts])

    # --- persistence --------------------------------------------------------------------------------------
    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save_model

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.encoder.config.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        save_model(self.model, str(out_dir / "model.safetensors"), metadata={"format": "pt", "ccguard": "input"})
        meta = {"kind": "input", "window": asdict(self.spec), "categories": self.categories}
        (out_dir / "classifier.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path) -> InputClassifier:
        from safetensors.torch import load_model
        from transformers import AutoConfig, AutoModel

        path = Path(path)
        meta_path = path / "classifier.json"
        if not meta_path.is_file():
            raise CcguardError("not an input classifier directory (classifier.json missing)", where=str(path))
        meta = json.loads(meta_path.read_text())
        config = AutoConfig.from_pretrained(path)
        encoder = AutoModel.from_config(config, attn_implementation="sdpa")
        model = InputModel(encoder, len(meta["categories"]))
        load_model(model, str(path / "model.safetensors"))
        window = dict(meta["window"])
        if window.get("view_names") is not None:
            window["view_names"] = tuple(window["view_names"])
        return cls(model, load_tokenizer(path), WindowSpec(**window), list(meta["categories"]))
