"""Streaming output classifier: a causal backbone with a linear value head on every token.

The model reads the prompt first (its last ``prompt_tokens`` tokens) and then the response (exchange
classification, as in Constitutional Classifiers++); only response positions are scored. A ``StreamSession``
encodes the prompt once and then scores response text in chunks of ``chunk_tokens`` tokens on a KV cache, so the
amortised cost per token does not grow with the response length. When a backbone's position budget fills up, the
session re-seeds its cache from the prompt and the last ``reseed_tokens`` response tokens.

With ``paragraph_windows``, every paragraph after the first is also scored in a window of its own: the prompt, then
that paragraph alone. A token's score is the higher of its two, so CBRN content after harmless background prose (a
history, a mechanism, a safety note) is read as if the answer began there. A stream keeps one such window, restarted
at each blank line, so the extra cost per token is at most one more pass and stays flat in length (design/040).

A session only scores: ``ccguard.policy.OutputGate`` decides, chunk by chunk, what may be released and where the
stream halts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ccguard.classifiers.backbone import load_tokenizer
from ccguard.classifiers.input import (
    _PARAGRAPH_BREAK,
    _special_affixes,
    length_batches,
    pad_batch,
    token_budget_for,
)
from ccguard.errors import CcguardError

SEPARATOR = "\nAssistant:"


@dataclass(frozen=True)
class OutputSpec:
    """How an exchange becomes model inputs, and how streaming is chunked."""

    prompt_tokens: int = 96
    chunk_tokens: int = 16
    reseed_tokens: int = 64
    max_positions: int = 512
    # Off for guards saved before the option existed, so their calibrated thresholds keep their meaning.
    paragraph_windows: bool = False


def opens_paragraph(text: str, prev_start: int, start: int) -> bool:
    """Whether the token at ``start`` opens a paragraph: a blank line lies between it and the start of the token before
    (at ``prev_start``). Reading from the earlier token's start covers tokenizers that keep newlines in tokens."""
    return _PARAGRAPH_BREAK.search(text, prev_start, start) is not None


def paragraph_starts(text: str, starts: Sequence[int]) -> list[int]:
    """Indices of the tokens (character ``starts``) that open the second and later paragraphs of ``text``."""
    return [i for i in range(1, len(starts)) if opens_paragraph(text, starts[i - 1], starts[i])]


def spans_from(cuts: Sequence[int], n: int) -> list[tuple[int, int]]:
    """``(start, end)`` token ranges from each cut to the next one, the last to ``n``."""
    return list(zip(cuts, [*cuts[1:], n]))  # noqa: B905 (no cuts: no ranges)


def is_causal_lm(config: Any) -> bool:
    return any(a.endswith("ForCausalLM") for a in (getattr(config, "architectures", None) or []))


class OutputModel(nn.Module):
    """Causal backbone + per-token value head. Returns value logits [B, T], LM logits (or None) and the cache."""

    def __init__(self, backbone: nn.Module, causal_lm: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.causal_lm = causal_lm
        self.value_head = nn.Linear(backbone.config.hidden_size, 1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, past: Any = None, use_cache: bool = False,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        kw: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": use_cache}
        if position_ids is not None:
            kw["position_ids"] = position_ids
        if past is not None:
            kw["cache"] = past
        if self.causal_lm:
            out = self.backbone(**kw, output_hidden_states=True)
            h, lm = out.hidden_states[-1], out.logits
        else:
            out = self.backbone(**kw)
            h, lm = out.last_hidden_state, None
        return self.value_head(h).squeeze(-1), lm, out.cache if use_cache else None


def load_output_backbone(name_or_path: str, num_layers: int | None = None) -> tuple[nn.Module, bool]:
    """A causal backbone: a causal LM as is, or an encoder switched to causal attention (``is_decoder``)."""
    from transformers import AutoModel, AutoModelForCausalLM

    from ccguard.classifiers.backbone import backbone_config

    path, config = backbone_config(name_or_path, num_layers)
    causal = is_causal_lm(config)
    if causal:
        return AutoModelForCausalLM.from_pretrained(path, config=config, use_safetensors=True, attn_implementation="sdpa",
                                                    use_kernels=False), True
    # sdpa applies a true causal mask; eager attention with a boolean 4D mask can leak future tokens.
    config.is_decoder = True
    return AutoModel.from_pretrained(path, config=config, use_safetensors=True, attn_implementation="sdpa",
                                     use_kernels=False), False


@dataclass
class TokenSpan:
    ids: list[int]
    starts: list[int]
    ends: list[int]


@dataclass(frozen=True)
class ExchangeScore:
    """Per-token scores of one response (``ccguard.policy.stop_char`` says where streaming would halt)."""

    token_scores: list[float]
    token_starts: list[int]
    token_ends: list[int]
    truncated: bool

    @property
    def score(self) -> float:
        return max(self.token_scores, default=0.0)


class OutputClassifier:
    """A trained output classifier. Holds no per-stream state: streams get a ``StreamSession`` each."""

    def __init__(self, model: OutputModel, tokenizer: Any, spec: OutputSpec) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.spec = spec
        self._prefix, self._suffix = _special_affixes(tokenizer)
        self._sep = tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]
        # Set by the fast runtime: ``model`` is then int8 and ``exact_model`` the full-precision original. An
        # exchange (or a stream, from that chunk on) that scores ``exact_from`` or above is scored by
        # ``exact_model``, so scores near a threshold stay exact.
        self.exact_model: OutputModel | None = None
        self.exact_from: float | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tensor(self, ids: Sequence[int]) -> torch.Tensor:
        """One sequence as a [1, T] batch on the model's device."""
        return torch.tensor([list(ids)], device=self.device)

    # --- tokenisation -------------------------------------------------------------------------------------
    def context_ids(self, prompt_text: str) -> list[int]:
        ids = self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"][-self.spec.prompt_tokens :]
        return self._prefix + ids + self._suffix + self._sep

    def response_tokens(self, text: str, start: int = 0) -> TokenSpan:
        enc = self.tokenizer(text[start:], add_special_tokens=False, return_offsets_mapping=True)
        offs = enc["offset_mapping"]
        return TokenSpan(list(enc["input_ids"]), [start + a for a, _ in offs], [start + b for _, b in offs])

    # --- batch scoring (full causal pass) -----------------------------------------------------------------
    def score(self, prompts: Sequence[str], responses: Sequence[str], token_budget: int | None = None) -> list[ExchangeScore]:
        """Per-token scores for each exchange with one full causal pass. Responses longer than the backbone's
        position budget are scored up to it (``truncated``); streaming sessions have no such limit. Batches hold up
        to ``token_budget`` padded tokens (None: the device's, ``token_budget_for``)."""
        token_budget = token_budget or token_budget_for(self.device)
        out = self._score_with(self.model, prompts, responses, token_budget)
        if self.exact_model is not None and self.exact_from is not None:
            redo = [i for i, r in enumerate(out) if r.score >= self.exact_from]
            if redo:
                exact = self._score_with(self.exact_model, [prompts[i] for i in redo], [responses[i] for i in redo],
                                         token_budget)
                for i, r in zip(redo, exact, strict=True):
                    out[i] = r
        return out

    @torch.inference_mode()
    def _score_with(self, model: OutputModel, prompts: Sequence[str], responses: Sequence[str],
                    token_budget: int) -> list[ExchangeScore]:
        items = []
        for p, r in zip(prompts, responses, strict=True):
            ctx = self.context_ids(p)
            span = self.response_tokens(r)
            cap = max(1, self.spec.max_positions - len(ctx))
            items.append((ctx, span, cap))
        seqs = [ctx + span.ids[:cap] for ctx, span, cap in items]
        owner = list(range(len(items)))  # which exchange each sequence scores, from which response token
        first = [0] * len(items)
        if self.spec.paragraph_windows:
            for j, ((ctx, span, cap), r) in enumerate(zip(items, responses, strict=True)):
                n = min(len(span.ids), cap)
                for a, b in spans_from(paragraph_starts(r, span.starts[:n]), n):
                    seqs.append(ctx + span.ids[a:b])
                    owner.append(j)
                    first.append(a)
        scores: list[np.ndarray | None] = [None] * len(items)
        for chunk in length_batches([len(s) for s in seqs], token_budget):
            ids, mask = pad_batch([seqs[k] for k in chunk], self.tokenizer.pad_token_id)
            values, _, _ = model(ids.to(self.device), mask.to(self.device))
            probs = torch.sigmoid(values.float()).cpu().numpy()
            for row, k in enumerate(chunk):
                j, a = owner[k], first[k]
                got = probs[row, len(items[j][0]) : len(seqs[k])]
                if k == j:
                    scores[j] = got.copy() if scores[j] is None else np.maximum(scores[j], got)
                else:  # a paragraph's window; the exchange's own pass may not have been read yet
                    cur = scores[j]
                    if cur is None:
                        cur = scores[j] = np.zeros(len(seqs[j]) - len(items[j][0]), dtype=got.dtype)
                    cur[a : a + len(got)] = np.maximum(cur[a : a + len(got)], got)
        out = []
        for (_, span, cap), s in zip(items, scores, strict=True):
            n = min(len(span.ids), cap)
            out.append(ExchangeScore(s.tolist(), span.starts[:n], span.ends[:n], truncated=len(span.ids) > cap))
        return out

    def session(self, prompt_text: str) -> StreamSession:
        return StreamSession(self, prompt_text)

    # --- persistence --------------------------------------------------------------------------------------
    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save_model

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.backbone.config.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        save_model(self.model, str(out_dir / "model.safetensors"), metadata={"format": "pt", "ccguard": "output"})
        (out_dir / "classifier.json").write_text(json.dumps(self._meta(), indent=2))

    def _meta(self) -> dict[str, Any]:
        return {"kind": "output", "causal_lm": self.model.causal_lm, "spec": asdict(self.spec)}

    def set_paragraph_windows(self, on: bool, saved_in: Path) -> None:
        """Switch ``OutputSpec.paragraph_windows`` here and in the classifier saved in ``saved_in`` (the weights stay)."""
        from dataclasses import replace

        from ccguard.records import atomic_write_text

        self.spec = replace(self.spec, paragraph_windows=on)
        atomic_write_text(Path(saved_in) / "classifier.json", json.dumps(self._meta(), indent=2))

    @classmethod
    def load(cls, path: Path) -> OutputClassifier:
        from safetensors.torch import load_model
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

        path = Path(path)
        meta_path = path / "classifier.json"
        if not meta_path.is_file():
            raise CcguardError("not an output classifier directory (classifier.json missing)", where=str(path))
        meta = json.loads(meta_path.read_text())
        config = AutoConfig.from_pretrained(path)
        auto = AutoModelForCausalLM if meta["causal_lm"] else AutoModel
        backbone = auto.from_config(config, attn_implementation="sdpa")
        model = OutputModel(backbone, meta["causal_lm"])
        load_model(model, str(path / "model.safetensors"))
        return cls(model, load_tokenizer(path), OutputSpec(**meta["spec"]))


@dataclass(frozen=True)
class ChunkScore:
    """One scored chunk of a stream."""

    start_char: int
    end_char: int
    score: float  # the chunk's highest token score


@dataclass
class StreamSession:
    """Per-stream scoring state: the KV cache, the response so far and its token scores. Not thread-safe; one per
    stream. It scores and never decides: ``add`` text, then score chunks one at a time with ``next_chunk`` (or
    ``take_chunk`` and ``record``, which let ``score_chunks`` batch several streams, as ``ccguard.policy.feed_gates``
    does), or ``feed``/``finish`` to score everything available."""

    clf: OutputClassifier
    prompt_text: str
    text: str = ""
    token_scores: list[float] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    token_starts: list[int] = field(default_factory=list)
    token_ends: list[int] = field(default_factory=list)
    _pending: TokenSpan = field(default_factory=lambda: TokenSpan([], [], []))
    _cache: Any = None
    _cache_len: int = 0
    _exact: bool = False  # fast runtime: switched to the full-precision model
    _window: StreamSession | None = None  # the current paragraph's own window (``OutputSpec.paragraph_windows``)
    # The prompt's context ids, its keys and values per layer, and whether the full-precision model made them: a
    # paragraph's window starts from them instead of tokenising and encoding the prompt again. A cache never changes
    # its tensors in place.
    _prompt_kv: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]], bool] | None = None

    def __post_init__(self) -> None:
        if self._prompt_kv is not None and self._prompt_kv[2] == self._exact:
            from transformers.cache_utils import DynamicCache

            self._ctx = self._prompt_kv[0]
            self._cache, self._cache_len = DynamicCache(), len(self._ctx)
            for li, (k, v) in enumerate(self._prompt_kv[1]):
                self._cache.update(k, v, li)
        else:
            self._ctx = self._prompt_kv[0] if self._prompt_kv is not None else self.clf.context_ids(self.prompt_text)
            self._seed(self._ctx)
            self._prompt_kv = (self._ctx, [(layer.keys, layer.values) for layer in self._cache.layers], self._exact)

    @property
    def max_score(self) -> float:
        return max(self.token_scores, default=0.0)

    def use_exact(self) -> None:
        """Score with the full-precision model from the start (fast runtime): for streams whose decisions do not rest
        on this classifier's score alone, so its int8 screening margin does not apply."""
        if self.clf.exact_model is not None and not self._exact:
            self._exact = True
            self._seed(self._ctx + self.token_ids)
            if self._window is not None:
                self._window.use_exact()

    @property
    def _model(self) -> OutputModel:
        return self.clf.exact_model if self._exact and self.clf.exact_model is not None else self.clf.model

    @torch.inference_mode()
    def _seed(self, ids: list[int]) -> None:
        _, _, cache = self._model(self.clf.tensor(ids), use_cache=True)
        self._cache, self._cache_len = cache, len(ids)

    def _reseed(self) -> None:
        """Restart the cache from the prompt and the most recent response tokens."""
        keep = self.token_ids[-self.clf.spec.reseed_tokens :] if self.clf.spec.reseed_tokens else []
        self._seed(self._ctx + keep)

    @torch.inference_mode()
    def _score_chunk(self, ids: list[int]) -> list[float]:
        if self._cache_len + len(ids) > self.clf.spec.max_positions:
            self._reseed()  # position budget exhausted
        values, _, cache = self._model(self.clf.tensor(ids), past=self._cache, use_cache=True)
        self._cache, self._cache_len = cache, self._cache_len + len(ids)
        scores = torch.sigmoid(values[0].float()).cpu().tolist()
        if not self._exact and self.clf.exact_from is not None and max(scores) >= self.clf.exact_from:
            # Near the threshold: from this chunk on, score with the full-precision model. Its cache is rebuilt
            # over what the int8 cache held, so positions match what they would have been.
            self._exact = True
            held = self._cache_len - len(ids) - len(self._ctx)
            self._seed(self._ctx + (self.token_ids[-held:] if held > 0 else []))
            return self._score_chunk(ids)
        return scores

    def _commit(self, final: bool) -> None:
        start = self.token_ends[-1] if self.token_ends else 0
        start = self._pending.ends[-1] if self._pending.ids else start
        if start >= len(self.text):
            return
        span = self.clf.response_tokens(self.text, start)
        if not final:
            # Only tokens that end before the last whitespace are final; the word being typed may still change.
            cut = max(self.text.rfind(" "), self.text.rfind("\n"), self.text.rfind("\t"))
            n = sum(1 for e in span.ends if e <= cut)
            span = TokenSpan(span.ids[:n], span.starts[:n], span.ends[:n])
        self._pending.ids += span.ids
        self._pending.starts += span.starts
        self._pending.ends += span.ends

    def add(self, text: str) -> None:
        """Append response text (nothing is scored yet)."""
        self.text += text
        self._commit(final=False)

    def take_chunk(self, final: bool = False) -> TokenSpan | None:
        """The next complete chunk of ``chunk_tokens`` tokens, unscored (with ``final``, the stream has ended: also
        a shorter last one); None when there is nothing to score yet. ``record`` its scores next."""
        if final:
            self._commit(final=True)
        k = self.clf.spec.chunk_tokens
        if not (len(self._pending.ids) >= k or (final and self._pending.ids)):
            return None
        span = TokenSpan(self._pending.ids[:k], self._pending.starts[:k], self._pending.ends[:k])
        self._pending = TokenSpan(self._pending.ids[k:], self._pending.starts[k:], self._pending.ends[k:])
        return span

    def windowed(self, span: TokenSpan, scores: list[float]) -> list[float]:
        """A taken chunk's token scores from this stream's own pass, raised where the chunk's paragraph scores higher in
        its own window (``OutputSpec.paragraph_windows``; otherwise ``scores`` as they are). Call it once per chunk,
        before ``record``: the window reads the chunk's tokens."""
        if not self.clf.spec.paragraph_windows:
            return scores
        out = list(scores)
        prev = self.token_starts[-1] if self.token_starts else None
        before = [prev, *span.starts[:-1]]  # the start of the token before each
        opens = [p is not None and opens_paragraph(self.text, p, q) for p, q in zip(before, span.starts, strict=True)]
        for a, b in spans_from([0, *(k for k in range(1, len(opens)) if opens[k])], len(span.ids)):
            if opens[a]:
                self._window = StreamSession(self.clf, self.prompt_text, _exact=self._exact, _prompt_kv=self._prompt_kv)
            if self._window is None:  # still in the first paragraph: the stream's own pass is its window
                continue
            ids = span.ids[a:b]
            got = self._window._score_chunk(ids)
            self._window.token_ids += ids
            out[a:b] = [max(x, y) for x, y in zip(out[a:b], got, strict=True)]
        return out

    def record(self, span: TokenSpan, scores: list[float]) -> ChunkScore:
        """Append a taken chunk and its token scores (``windowed`` first)."""
        self.token_scores += scores
        self.token_ids += span.ids
        self.token_starts += span.starts
        self.token_ends += span.ends
        return ChunkScore(span.starts[0], span.ends[-1], max(scores))

    def next_chunk(self, final: bool = False) -> ChunkScore | None:
        """Score the next chunk (see ``take_chunk``); None when there is nothing to score yet."""
        span = self.take_chunk(final)
        return None if span is None else self.record(span, self.windowed(span, self._score_chunk(span.ids)))

    def feed(self, text: str) -> list[ChunkScore]:
        """Add response text and score every complete chunk it makes available."""
        self.add(text)
        return list(iter(self.next_chunk, None))

    def finish(self) -> list[ChunkScore]:
        """The stream ended: score what is left."""
        return list(iter(lambda: self.next_chunk(final=True), None))

    def decoded_score(self, upto: int) -> float | None:
        """The exchange score of the decoded view (base64, hex, ciphers, leetspeak ...) of the response's first
        ``upto`` characters; None when nothing in it decodes."""
        from ccguard.views import builtin_view_names, decoded_views, decoders

        # ccguard's own views only: a view plugin installed later must not move a calibrated guard's scores.
        views = decoded_views(self.text[:upto], decoders(builtin_view_names()))
        if len(views) < 2:
            return None
        return self.clf.score([self.prompt_text], [views[-1].text])[0].score

    def full_pass_scores(self) -> np.ndarray:
        """Scores of the same tokens from one uncached causal pass, and one per paragraph window (for exactness
        checks)."""

        def run(ids: list[int]) -> np.ndarray:
            with torch.inference_mode():
                values, _, _ = self.clf.model(self.clf.tensor(self._ctx + ids))
            return torch.sigmoid(values[0, len(self._ctx) :].float()).cpu().numpy()

        out = run(self.token_ids)
        if self.clf.spec.paragraph_windows:
            for a, b in spans_from(paragraph_starts(self.text, self.token_starts), len(self.token_ids)):
                out[a:b] = np.maximum(out[a:b], run(self.token_ids[a:b]))
        return out


def _batchable(session: StreamSession) -> bool:
    # The fast runtime may switch a stream to its full-precision model mid-chunk: those streams score alone.
    return session.clf.exact_model is None


@torch.inference_mode()
def score_chunks(items: Sequence[tuple[StreamSession, list[int]]]) -> list[list[float]]:
    """Token scores of one chunk from each of several streams, in one batched forward pass where it can.

    Each stream's KV cache has its own length, so the caches are left-padded to the longest and masked, the chunks
    are right-padded, and every row gets its own position ids; afterwards each stream keeps exactly its own keys and
    values (the padding is cut off). The scores equal those of scoring each chunk alone (a test checks 1e-5)."""
    from torch.nn import functional as F
    from transformers.cache_utils import DynamicCache

    out: list[list[float] | None] = [None] * len(items)
    batch = [i for i, (s, _) in enumerate(items) if _batchable(s)]
    if len(batch) < 2 or len({id(items[i][0].clf) for i in batch}) > 1:
        batch = []
    batched = set(batch)
    for i, (s, ids) in enumerate(items):
        if i not in batched:
            out[i] = s._score_chunk(ids)
    if not batch:
        return out  # type: ignore[return-value]
    sessions = [items[i][0] for i in batch]
    chunks = [items[i][1] for i in batch]
    for s, ids in zip(sessions, chunks, strict=True):
        if s._cache_len + len(ids) > s.clf.spec.max_positions:
            s._reseed()  # position budget exhausted, as when scoring alone
    clf = sessions[0].clf
    lens = [s._cache_len for s in sessions]
    width, k = max(lens), max(len(c) for c in chunks)
    cache = DynamicCache()
    for li in range(len(sessions[0]._cache.layers)):
        keys = [F.pad(s._cache.layers[li].keys, (0, 0, width - n, 0)) for s, n in zip(sessions, lens, strict=True)]
        values = [F.pad(s._cache.layers[li].values, (0, 0, width - n, 0)) for s, n in zip(sessions, lens, strict=True)]
        cache.update(torch.cat(keys), torch.cat(values), li)
    dev = clf.device
    ids = torch.tensor([c + [0] * (k - len(c)) for c in chunks], device=dev)
    mask = torch.tensor([[0] * (width - n) + [1] * (n + len(c)) + [0] * (k - len(c)) for n, c in zip(lens, chunks, strict=True)],
                        device=dev)
    pos = torch.tensor([[n + j for j in range(k)] for n in lens], device=dev)
    values, _, new = clf.model(ids, attention_mask=mask, past=cache, use_cache=True, position_ids=pos)
    probs = torch.sigmoid(values.float()).cpu()
    for row, (i, s, n, c) in enumerate(zip(batch, sessions, lens, chunks, strict=True)):
        own = DynamicCache()
        for li, layer in enumerate(new.layers):
            span = slice(width - n, width + len(c))
            own.update(layer.keys[row : row + 1, :, span], layer.values[row : row + 1, :, span], li)
        s._cache, s._cache_len = own, n + len(c)
        out[i] = probs[row, : len(c)].tolist()
    return out  # type: ignore[return-value]
