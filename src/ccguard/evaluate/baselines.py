"""The simple alternatives a user would try first, scored on the same data as ccguard.

- ``keyword``: a case-insensitive regex over the constitution's harmful topic entities (score = hits, squashed).
- ``tfidf_lr``: TF-IDF word and character n-grams + logistic regression, trained on the run's training split.
- ``minilm_lr``: frozen all-MiniLM-L6-v2 mean-pooled embeddings + logistic regression, same training data.
- ``no_augmentation``: ccguard's own input classifier trained without stage II (the ablation); trained on demand
  and cached in the run directory.

Each is registered (kind ``baseline``) as ``factory(ctx: BaselineContext) -> Scorer``; a plugin baseline registers
the same way, with ``needs_data=True`` when it trains on the run's data and ``needs_constitution=True`` when it reads
the constitution; without them it is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ccguard.constitution import Constitution
from ccguard.records import Example, render_prompt
from ccguard.registry import register


class Scorer(Protocol):
    name: str

    def score(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass
class BaselineContext:
    """What a baseline may build from: the constitution, and the guard's run directory (its data splits)."""

    const: Constitution | None
    run_dir: Path | None
    guard: Any = None
    console: Any = None
    _train: list[Example] | None = None

    @property
    def train(self) -> list[Example]:
        """The run's training split (read once)."""
        if self._train is None:
            from ccguard.records import read_examples

            if self.run_dir is None:
                raise ValueError("this baseline needs the run's data")
            self._train = read_examples(self.run_dir / "data" / "train.jsonl")
        return self._train


@register("baseline", "keyword", needs_data=False, needs_constitution=True)
def keyword(ctx: BaselineContext) -> Scorer:
    """Case-insensitive regex over the constitution's harmful terms; score = 1 - exp(-hits)."""
    if ctx.const is None:
        raise ValueError("the keyword baseline needs the guard's constitution")
    return KeywordBaseline.from_constitution(ctx.const)


@register("baseline", "tfidf_lr", needs_data=True)
def _tfidf_lr(ctx: BaselineContext) -> Scorer:
    """TF-IDF word and character n-grams + logistic regression on the run's training split."""
    return tfidf_lr(ctx.train)


@register("baseline", "minilm_lr", needs_data=True)
def _minilm_lr(ctx: BaselineContext) -> Scorer:
    """Frozen all-MiniLM-L6-v2 mean-pooled embeddings + logistic regression on the run's training split."""
    return minilm_lr(ctx.train)


@register("baseline", "no_augmentation", needs_data=True, needs_constitution=True)
def _no_augmentation(ctx: BaselineContext) -> Scorer:
    """The ablation: ccguard's input classifier retrained on the same split without stage II variants (cached)."""
    from ccguard.train.args import TrainArgs

    if ctx.const is None or ctx.run_dir is None or ctx.guard is None:
        raise ValueError("the no_augmentation baseline needs the guard, its constitution and its run directory")
    args = TrainArgs.from_dict(ctx.guard.manifest.input.training["args"])
    if ctx.console is not None:
        ctx.console.print("training the no-augmentation ablation (cached for later evals) ...")
    return no_augmentation(ctx.run_dir, ctx.const, args)


@dataclass
class KeywordBaseline:
    pattern: re.Pattern[str]
    name: str = "keyword"

    @classmethod
    def from_constitution(cls, const: Constitution) -> KeywordBaseline:
        terms = [re.escape(t) for t in const.harmful_terms() if len(t) >= 3]
        return cls(re.compile(r"(?<!\w)(" + "|".join(terms) + r")(?!\w)", re.IGNORECASE))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        hits = np.array([len(self.pattern.findall(t)) for t in texts], dtype=float)
        return 1.0 - np.exp(-hits)


@dataclass
class SklearnBaseline:
    name: str
    featurize: Any
    clf: Any

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.clf.predict_proba(self.featurize(list(texts)))[:, 1]


def _xy(train: list[Example]) -> tuple[list[str], np.ndarray]:
    return [render_prompt(e.prompt) for e in train], np.array([int(e.label == "harmful") for e in train])


def tfidf_lr(train: list[Example]) -> SklearnBaseline:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion

    x, y = _xy(train)
    vec = FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=50_000)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True, max_features=100_000)),
    ])
    clf = LogisticRegression(max_iter=2000, C=4.0, class_weight="balanced").fit(vec.fit_transform(x), y)
    return SklearnBaseline("tfidf_lr", vec.transform, clf)


class MiniLMEmbedder:
    """Frozen all-MiniLM-L6-v2 sentence embeddings (mean pooling, 256 tokens), batched."""

    def __init__(self) -> None:
        from ccguard.classifiers.backbone import load_encoder, load_tokenizer, resolve_backbone

        self.model = load_encoder("minilm").eval()
        self.tok = load_tokenizer(resolve_backbone("minilm"))

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            embs: dict[int, np.ndarray] = {}
            for k in range(0, len(order), 64):
                idx = order[k : k + 64]
                enc = self.tok([texts[i] for i in idx], padding=True, truncation=True, max_length=256, return_tensors="pt")
                h = self.model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).float()
                e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
                for i, v in zip(idx, e, strict=True):
                    embs[i] = v
            out = [embs[i] for i in range(len(texts))]
        return np.stack(out) if out else np.zeros((0, 384))


def minilm_lr(train: list[Example], embedder: MiniLMEmbedder | None = None) -> SklearnBaseline:
    from sklearn.linear_model import LogisticRegression

    embed = embedder or MiniLMEmbedder()
    x, y = _xy(train)
    clf = LogisticRegression(max_iter=3000, C=2.0, class_weight="balanced").fit(embed(x), y)
    return SklearnBaseline("minilm_lr", embed, clf)


@dataclass
class InputClassifierScorer:
    name: str
    clf: Any

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([s.score for s in self.clf.score(list(texts))])


def no_augmentation(run_dir: Path, const: Constitution, args: Any) -> InputClassifierScorer:
    """The ablation: the input classifier trained on the same split without stage II variants (cached)."""
    from ccguard.classifiers.input import InputClassifier
    from ccguard.records import read_examples
    from ccguard.train.debias import training_weights
    from ccguard.train.input import train_input

    out = run_dir / "ablation" / "no_augmentation"
    if (out / "model.safetensors").is_file():
        return InputClassifierScorer("no_augmentation", InputClassifier.load(out))
    train = [e for e in read_examples(run_dir / "data" / "train.jsonl") if not e.lineage]
    weights, _ = training_weights(train, const, "input", args)  # a debiased guard's ablation is debiased too
    clf, _ = train_input(train, [c.id for c in const.harmful], args, weights=weights)
    tmp = out.with_name(out.name + ".partial")
    clf.save(tmp)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return InputClassifierScorer("no_augmentation", clf)
