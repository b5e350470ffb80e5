"""Shortcut audit: can a bag of words tell harmful from harmless once the topic words are masked?

If it can, the training data teaches the classifiers its *style* (phrasings only the harmful seeds use) as well as its
CBRN content, and a guard trained on it will key on those phrasings. Topic words are every category's seed entities
and crossed entities, the constitution's harmful terms and the content words of each category's title and
description; any token with a digit is masked too. A TF-IDF + logistic-regression model is fitted on the masked
train split and scored on val+test. The same model is also fitted with every word but English function words masked
(:func:`mask_content`): the topic mask hides the constitution's topics only, and the everyday nouns that harmless
texts are mostly about stay visible; this one hides every content word.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ccguard.constitution import Constitution
from ccguard.evaluate.metrics import auroc
from ccguard.records import Example, Label, read_examples, render_prompt

Side = Literal["input", "output"]
TARGET = 0.65
# Two characters, so TfidfVectorizer's default token pattern (2+ word characters) keeps it and the bigrams around it.
MASK = "__"
_WORD = re.compile(r"[^\W_]+")
_MASKED_RUN = re.compile(r"\s*" + re.escape(MASK) + r"\s*")
# English closed-class words, and the discourse markers that open or close an answer. Masking every other word leaves
# a text's style alone: its pronouns, modals, prepositions, negation and openers, with no topic word on either side.
# Homographs with a common topic sense ('well', 'mine', 'still') are left out. Contraction fragments ('you'd' is
# 'you' + 'd') are kept so that they are not masked, although the vectorizer ignores one-letter tokens ('a', 'i', 'd').
_FUNCTION_WORDS = """
a an the this that these those some any each every either neither no none all both few many much more most less least
several such other another own same what which whose whoever whatever whichever
i me my myself we us our ours ourselves you your yours yourself yourselves he him his himself she her hers
herself it its itself they them their theirs themselves one oneself someone somebody something anyone anybody
anything everyone everybody everything nobody nothing somewhere anywhere everywhere nowhere
about above across after against along amid among around as at before behind below beneath beside besides between
beyond but by despite down during except for from in inside into like near of off on onto out outside over past
per since than through throughout till to toward towards under underneath unlike until up upon via with within
without including regarding versus alongside amongst plus
and or nor so yet because although though while whilst whereas if unless whether once whenever wherever lest
be am is are was were been being have has had having do does did doing done will would shall should can could may
might must ought let going
not never yes t s d ll ve re m don won cannot isn aren wasn weren doesn didn hasn haven hadn shouldn
wouldn couldn mustn needn shan ain
how why when where who whom there here then now just only also too very quite rather really even already again
ever else instead perhaps maybe almost enough however therefore thus hence otherwise anyway indeed actually somehow
moreover furthermore nevertheless nonetheless meanwhile ago etc
basically generally usually often sometimes always first second third finally next last
sure okay ok oh please thanks thank hello hi hey alright right certainly absolutely
"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())


class Feature(BaseModel):
    """One n-gram of the masked-text model and its logistic-regression weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ngram: str = Field(description="The unigram or bigram, lowercased, with masked topic words shown as '__'.")
    weight: float = Field(description="Its coefficient: positive predicts harmful, negative predicts harmless.")


class TopFeatures(BaseModel):
    """The masked-text n-grams that most predict each label: the phrasings to balance across labels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    harmful: list[Feature] = Field(description="Largest positive weights first.")
    harmless: list[Feature] = Field(description="Largest negative weights first.")


class GroupAudit(BaseModel):
    """How well the masked-text model tells one group of eval rows from every eval row of the other label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str = Field(description="The rows' category, or 'refusals', 'compliant answers', 'partial answers', 'pool'.")
    label: Label = Field(description="The group's label.")
    n: int = Field(description="Eval rows in the group.")
    auroc: float = Field(description="AUROC of this group against all eval rows of the other label: 0.5 means its "
                         "style is no different, 1.0 that style alone sets it apart.")


class ShortcutAudit(BaseModel):
    """How well topic-free style predicts the label on one side of the data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    side: Side = Field(description="'input' (rendered prompts) or 'output' (responses).")
    n_train: int = Field(description="Training rows the models were fitted on (after any subsampling).")
    n_eval: int = Field(description="Evaluation rows (val + test).")
    n_train_base: int = Field(description="Training rows without transform lineage (seed, template, pool bases).")
    n_eval_base: int = Field(description="Evaluation rows without transform lineage.")
    auroc_masked: float | None = Field(description="Eval AUROC of the model on topic-masked text; None with one class.")
    auroc_unmasked: float | None = Field(description="Eval AUROC of the same model on the raw text, for reference.")
    auroc_masked_base: float | None = Field(
        description="Masked-text AUROC with train and eval restricted to base rows (no lineage): the seed banks' own "
        "style, before augmentation dilutes or adds to it."
    )
    auroc_topic_deleted: float | None = Field(
        default=None,
        description="The same with topic words deleted instead of masked, so neither their count nor their place "
        "shows: function words and phrasing alone. The gap to auroc_masked is what topic-word density gives away.",
    )
    auroc_function_words: float | None = Field(
        default=None,
        description="The same model on text where every word but the English function words (FUNCTION_WORDS) is "
        "masked: style alone, symmetric in the labels. The topic mask hides the constitution's topic words and leaves "
        "the everyday nouns outside it, which occur mostly on the harmless side and which the model then reads as "
        "harmless; this mask hides both. It does not decide 'passed'.",
    )
    top_features: TopFeatures = Field(description="The masked-text n-grams that most predict each label.")
    by_group: list[GroupAudit] = Field(
        default_factory=list,
        description="The same masked model per group of eval rows (at least MIN_GROUP rows), most separable first: "
        "which seed banks carry the shortcut.",
    )
    target: float = Field(default=TARGET, description="Highest acceptable masked AUROC.")
    passed: bool = Field(description="Whether auroc_masked, and auroc_masked_base where defined, are at most target.")
    seconds: float = Field(description="Wall time of the audit.")

    def summary(self, k: int = 6) -> str:
        """One line: the AUROCs, the verdict and the strongest harmful-predictive n-grams."""
        top = ", ".join(repr(f.ngram) for f in self.top_features.harmful[:k])
        return (
            f"shortcut audit ({self.side}): masked AUROC {_f(self.auroc_masked)} (unmasked {_f(self.auroc_unmasked)}, "
            f"base {_f(self.auroc_masked_base)}, topic words deleted {_f(self.auroc_topic_deleted)}, "
            f"function words only {_f(self.auroc_function_words)}), target <= {self.target:.2f}: {'pass' if self.passed else 'FAIL'}; "
            f"top harmful n-grams: {top}"
            + ("; most separable groups: " + ", ".join(f"{g.group} {g.auroc:.2f}" for g in self.by_group[:3]) if self.by_group else "")
        )


class ShortcutReport(BaseModel):
    """The shortcut audit of a run's data, both sides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: ShortcutAudit = Field(description="Prompts: data/train.jsonl against val + test.")
    output: ShortcutAudit = Field(description="Responses: data/output_train.jsonl against output_val + output_test.")


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _stems(w: str) -> list[str]:
    """Light stemming: w without a plural or verb ending ('agents', 'viruses', 'synthesized', 'stopped', 'making')."""
    out = []
    for suf in ("ing", "ies", "es", "ed", "s"):
        if w.endswith(suf) and len(w) > len(suf) + 1:
            stem = w[: -len(suf)]
            out.append(stem)
            if suf == "ies":
                out.append(stem + "y")
            elif suf in ("ing", "ed"):
                out.append(stem + "e")
                if len(stem) > 2 and stem[-1] == stem[-2]:
                    out.append(stem[:-1])
    return out


def topic_vocabulary(const: Constitution) -> set[str]:
    """Lowercased words to mask: the words of every entity (crossed entities included) and harmful term, plus the
    content words of each category's title and description, closed under light stemming. Stop-words are dropped
    everywhere ('a Novichok agent' must not mask 'a'); entity words keep short forms such as 'vx', policy prose only
    words of 4+ letters."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    terms = [e for c in const.categories for e in (*c.seeds.entities, *c.seeds.crossed_entities)] + const.harmful_terms()
    vocab = {w for t in terms for w in _WORD.findall(t.lower()) if len(w) >= 2 and w not in ENGLISH_STOP_WORDS}
    for c in const.categories:
        prose = f"{c.title} {c.description}".lower()
        vocab.update(w for w in _WORD.findall(prose) if len(w) >= 4 and w not in ENGLISH_STOP_WORDS)
    # 'agents' in an entity should mask 'agent' in text; stems under 4 letters ('ga' from 'gas') are too ambiguous.
    vocab |= {s for w in vocab for s in _stems(w) if len(s) >= 4}
    return vocab


def _is_topic(w: str, vocab: set[str]) -> bool:
    return w in vocab or any(ch.isdigit() for ch in w) or any(s in vocab for s in _stems(w))


def mask_topic(text: str, vocab: set[str], memo: dict[str, bool] | None = None) -> str:
    """Replace topic words (case-insensitive, whole words, light inflections) and tokens with a digit by '__'. A run of
    masked words separated only by spaces or hyphens becomes one mask, so a long entity name leaves no length cue.
    ``memo`` caches each word's verdict across calls with the same ``vocab``."""
    return _mask(text, lambda w: _is_topic(w, vocab), memo)


def mask_content(text: str) -> str:
    """Replace every word that is not an English function word (:data:`FUNCTION_WORDS`) by '__', runs merged as in
    :func:`mask_topic`: what is left is style alone, with no topic or content word on either label's side."""
    return _mask(text, lambda w: w not in FUNCTION_WORDS, None)


def _mask(text: str, masked: Callable[[str], bool], memo: dict[str, bool] | None) -> str:
    memo = {} if memo is None else memo
    out: list[str] = []
    pos = 0
    prev_masked = False
    for m in _WORD.finditer(text):
        gap = text[pos : m.start()]
        pos = m.end()
        w = m.group().lower()
        hit = memo.get(w)
        if hit is None:
            hit = memo[w] = masked(w)
        if hit:
            if not (prev_masked and not gap.strip(" \t-")):
                out += (gap, MASK)
            prev_masked = True
        else:
            out += (gap, m.group())
            prev_masked = False
    out.append(text[pos:])
    return "".join(out)


def _deleted(masked: str) -> str:
    return _MASKED_RUN.sub(" ", masked)


MIN_GROUP = 20
# Groups named by source; every other row is grouped by its category.
_SOURCE_GROUPS = {"seed_refusal": "refusals", "seed_compliant": "compliant answers", "seed_partial": "partial answers",
                  "pool": "pool"}


def _group(e: Example) -> str:
    return _SOURCE_GROUPS.get(e.source, e.category or e.source)


def _by_group(rows: list[Example], y: list[int], p: list[float]) -> list[GroupAudit]:
    """Each group's AUROC against all rows of the other label (groups of at least MIN_GROUP rows)."""
    groups: dict[tuple[str, int], list[float]] = {}
    for e, yy, pp in zip(rows, y, p, strict=True):
        groups.setdefault((_group(e), yy), []).append(pp)
    other = {lab: [pp for yy, pp in zip(y, p, strict=True) if yy != lab] for lab in (0, 1)}
    out = []
    for (g, lab), ps in groups.items():
        if len(ps) < MIN_GROUP or not other[lab]:
            continue
        pos, neg = (ps, other[lab]) if lab == 1 else (other[lab], ps)
        a = auroc([1] * len(pos) + [0] * len(neg), pos + neg)
        out.append(GroupAudit(group=g, label="harmful" if lab else "harmless", n=len(ps), auroc=round(a, 3)))
    return sorted(out, key=lambda x: -x.auroc)


def _cap(rows: list[Example], n: int, seed: int) -> list[Example]:
    return random.Random(seed).sample(rows, n) if len(rows) > n else rows


def _text(e: Example, side: Side) -> str:
    return render_prompt(e.prompt) if side == "input" else (e.response or "")


def _fit(texts: list[str], y: list[int]):
    """The audit's bag-of-words model, fitted; None when the labels have one class."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if len(set(y)) < 2:
        return None
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        # liblinear: the L2 model of lbfgs (bar a penalised intercept), ~10x faster here on 2 busy cores.
        LogisticRegression(max_iter=1000, C=1.0, solver="liblinear"),
    )
    return model.fit(texts, y)


def _eval(model, texts: list[str], y: list[int]) -> float | None:
    return None if model is None or not texts else auroc(y, model.predict_proba(texts)[:, 1].tolist())


def audit(
    examples_train: Sequence[Example],
    examples_eval: Sequence[Example],
    vocab: set[str],
    side: Side = "input",
    *,
    max_train: int = 20_000,
    max_eval: int = 10_000,
    seed: int = 0,
    top_k: int = 25,
    target: float = TARGET,
) -> ShortcutAudit:
    """Fit the bag-of-words model on masked training text and report its eval AUROC (and the same on raw text, and
    on base rows only). Rows beyond ``max_train`` and ``max_eval`` are subsampled with ``seed``, to bound the time."""
    t0 = time.perf_counter()
    train = _cap(list(examples_train), max_train, seed)
    evals = _cap(list(examples_eval), max_eval, seed)
    masked: dict[int, str] = {}
    memo: dict[str, bool] = {}

    def texts(rows: list[Example], mask: bool) -> list[str]:
        if not mask:
            return [_text(e, side) for e in rows]
        for e in rows:
            if id(e) not in masked:
                masked[id(e)] = mask_topic(_text(e, side), vocab, memo)
        return [masked[id(e)] for e in rows]

    def labels(rows: list[Example]) -> list[int]:
        return [int(e.label == "harmful") for e in rows]

    m_masked = _fit(texts(train, True), labels(train))
    m_raw = _fit(texts(train, False), labels(train))
    base_train = _cap([e for e in examples_train if not e.lineage], max_train, seed)
    base_eval = [e for e in evals if not e.lineage]
    m_base = _fit(texts(base_train, True), labels(base_train))

    p_masked = m_masked.predict_proba(texts(evals, True))[:, 1].tolist() if m_masked is not None and evals else []
    a_masked = auroc(labels(evals), p_masked) if p_masked else None
    by_group = _by_group(evals, labels(evals), p_masked) if p_masked else []
    m_deleted = _fit([_deleted(t) for t in texts(train, True)], labels(train))
    a_deleted = _eval(m_deleted, [_deleted(t) for t in texts(evals, True)], labels(evals))
    a_base = _eval(m_base, texts(base_eval, True), labels(base_eval))
    m_style = _fit([mask_content(_text(e, side)) for e in train], labels(train))
    a_style = _eval(m_style, [mask_content(_text(e, side)) for e in evals], labels(evals))
    harmful: list[Feature] = []
    harmless: list[Feature] = []
    if m_masked is not None:
        names = m_masked[0].get_feature_names_out()
        coef = m_masked[-1].coef_[0]
        order = coef.argsort()
        harmful = [Feature(ngram=names[i], weight=round(float(coef[i]), 4)) for i in order[::-1][:top_k] if coef[i] > 0]
        harmless = [Feature(ngram=names[i], weight=round(float(coef[i]), 4)) for i in order[:top_k] if coef[i] < 0]
    return ShortcutAudit(
        side=side,
        n_train=len(train),
        n_eval=len(evals),
        n_train_base=len(base_train),
        n_eval_base=len(base_eval),
        auroc_masked=a_masked,
        auroc_unmasked=_eval(m_raw, texts(evals, False), labels(evals)),
        auroc_masked_base=a_base,
        auroc_topic_deleted=a_deleted,
        auroc_function_words=a_style,
        top_features=TopFeatures(harmful=harmful, harmless=harmless),
        by_group=by_group,
        target=target,
        passed=a_masked is not None and a_masked <= target and (a_base is None or a_base <= target),
        seconds=round(time.perf_counter() - t0, 1),
    )


def audit_data_dir(data_dir: Path, const: Constitution, *, seed: int = 0) -> ShortcutReport:
    """Audit a pipeline data directory: prompts (train vs val+test) and responses (output_train vs output_val+test)."""
    data_dir = Path(data_dir)
    vocab = topic_vocabulary(const)

    def side(prefix: str, name: Side) -> ShortcutAudit:
        train = read_examples(data_dir / f"{prefix}train.jsonl")
        evals = read_examples(data_dir / f"{prefix}val.jsonl") + read_examples(data_dir / f"{prefix}test.jsonl")
        return audit(train, evals, vocab, name, seed=seed)

    return ShortcutReport(input=side("", "input"), output=side("output_", "output"))
