"""The one place a score becomes a decision: calibration, the policy, verdicts and the output stream's gate.

- **Calibration** turns scores on held-out data into a threshold at a target false-positive rate. It is two-sided
  when an everyday benign set is given: the target FPR is the rate on *everyday* traffic (what users actually
  send), and the FPR on *hard neighbours* (harmless topics next to the harmful ones, benign text in ciphers and
  templates) is bounded by its own, looser cap. The threshold is the stricter of the two; the calibration records
  which one bound.
- **Policy** holds the thresholds and makes every verdict. ``flagged`` is the single comparison: a score above its
  threshold is flagged.
- **OutputGate** applies the policy to one response stream: a ``StreamSession`` only scores chunks; the gate decides
  where release stops.

Classifiers, the proxy, red teaming and evaluation all call into this module; nothing else compares a score with a
threshold.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ccguard.errors import CcguardError
from ccguard.records import PAIR_SOURCE

Stage = Literal["input", "output"]
# Default ``Policy.history_margin`` (logits); see benchmarks/multi_turn.py for how it trades context poisoning
# against harmful requests hidden further back in a conversation.
HISTORY_MARGIN = 1.5


# --- rates and thresholds ------------------------------------------------------------------------------------
class Rate(BaseModel):
    """A proportion with its Wilson 95% interval."""

    model_config = ConfigDict(frozen=True)
    k: int = Field(description="Count of hits.")
    n: int = Field(description="Count of trials.")
    rate: float | None = Field(description="k / n, or None when n = 0.")
    lo: float | None = Field(description="Lower end of the 95% Wilson interval.")
    hi: float | None = Field(description="Upper end of the 95% Wilson interval.")

    def fmt(self) -> str:
        if self.rate is None:
            return "n/a (n=0)"
        return f"{100 * self.rate:.1f}% [{100 * self.lo:.1f}, {100 * self.hi:.1f}] (n={self.n})"


def wilson(k: int, n: int, z: float = 1.959964) -> Rate:
    """Wilson score interval for k successes in n trials."""
    if n == 0:
        return Rate(k=0, n=0, rate=None, lo=None, hi=None)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return Rate(k=k, n=n, rate=p, lo=max(0.0, centre - half), hi=min(1.0, centre + half))


def flagged(score: float, threshold: float) -> bool:
    """The decision rule, everywhere: flag when the score is above the threshold."""
    return score > threshold


def flagged_rate(scores: Sequence[float], threshold: float) -> Rate:
    s = np.asarray(scores, dtype=float)
    return wilson(int((s > threshold).sum()), len(s))  # ``flagged``, vectorised


def threshold_at_fpr(benign_scores: Sequence[float], target_fpr: float) -> float:
    """The threshold t (flag when score > t) that flags at most ``target_fpr`` of the benign scores."""
    s = np.sort(np.asarray(benign_scores, dtype=float))[::-1]
    if len(s) == 0:
        raise ValueError("no benign scores to calibrate on")
    k = int(math.floor(target_fpr * len(s)))
    return float(s[min(k, len(s) - 1)])


def logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def discounted(score: float, margin: float) -> float:
    """``score`` moved ``margin`` logits down."""
    return float(1.0 / (1.0 + math.exp(-(logit(score) - margin))))


def ensemble(classifier: float, probe: float | None, weight: float) -> float:
    """The output classifier's score ensembled with a probe's: ``sigmoid(w * probe logit + (1 - w) * classifier
    logit)``; the classifier's alone when there is no probe score."""
    if probe is None:
        return classifier
    return 1.0 / (1.0 + math.exp(-(weight * logit(probe) + (1 - weight) * logit(classifier))))


def stop_char(token_scores: Sequence[float], token_starts: Sequence[int], threshold: float, chunk_tokens: int) -> int | None:
    """Where a stream scored ``chunk_tokens`` tokens at a time halts: the first character of the first flagged
    chunk (None: it never halts). ``OutputGate`` makes the same decision chunk by chunk."""
    for k in range(0, len(token_scores), chunk_tokens):
        if flagged(max(token_scores[k : k + chunk_tokens]), threshold):
            return int(token_starts[k])
    return None


# --- calibration -----------------------------------------------------------------------------------------------
class Calibration(BaseModel):
    """A threshold and what it achieved on the calibration set."""

    model_config = ConfigDict(frozen=True)
    threshold: float = Field(description="Flag when score > threshold.")
    target_fpr: float = Field(description="The false-positive rate asked for.")
    fpr: Rate = Field(description="False-positive rate achieved on the calibration benign set, with 95% CI.")
    tpr: Rate = Field(description="True-positive rate on the calibration harmful set at this threshold.")
    calibration_set: str = Field(description="Which data the threshold was set on.")
    family_fpr: float | None = Field(default=None, description="Per-family FPR bound, when one was applied.")
    by_family: dict[str, Rate] = Field(default_factory=dict, description="FPR achieved within each benign family.")
    binding: str = Field(
        default="overall",
        description="Which constraint set the threshold: 'overall' (one-sided), 'everyday', 'hard_neighbours' or a family.",
    )
    hard_fpr_cap: float | None = Field(default=None, description="Two-sided: the FPR cap on hard neighbours.")
    hard: Rate | None = Field(default=None, description="Two-sided: FPR achieved on the hard neighbours.")
    everyday_set: str | None = Field(default=None, description="Two-sided: the everyday benign set `fpr` is measured on.")
    contrast: Rate | None = Field(
        default=None, description="FPR on the harmless sides of the constitution's intent pairs: reported, never bound.")


def calibrate(
    benign: Sequence[float],
    harmful: Sequence[float],
    *,
    target_fpr: float,
    calibration_set: str,
    benign_families: Sequence[Sequence[str]] | None = None,
    family_fpr: float | None = None,
    min_family_size: int = 50,
    everyday: Sequence[float] | None = None,
    hard_fpr: float | None = None,
    everyday_set: str | None = None,
) -> Calibration:
    """Choose the threshold that flags at most ``target_fpr`` of ``benign`` overall and, when ``family_fpr`` is
    given, at most ``family_fpr`` of the benign examples of each transform family (families smaller than
    ``min_family_size`` are reported but do not bind). A user who wraps a harmless request in role-play or a cipher
    is still a harmless user: the FPR promise should hold for them too, not only on average.

    With ``everyday`` scores, ``target_fpr`` applies to them instead, ``benign`` are the hard neighbours, bounded by
    ``hard_fpr``, and the families bound as before."""
    if everyday is not None:
        t, binding = threshold_at_fpr(everyday, target_fpr), "everyday"
        if hard_fpr is not None and (th := threshold_at_fpr(benign, hard_fpr)) > t:
            t, binding = th, "hard_neighbours"
    else:
        t, binding = threshold_at_fpr(benign, target_fpr), "overall"
    groups: dict[str, list[float]] = {}
    if benign_families is not None:
        for s, fams in zip(benign, benign_families, strict=True):
            for f in dict.fromkeys(fams):
                groups.setdefault(f, []).append(s)
        if family_fpr is not None:
            for f, scores in sorted(groups.items()):
                if len(scores) >= min_family_size:
                    tf = threshold_at_fpr(scores, family_fpr)
                    if tf > t:
                        t, binding = tf, f
    return Calibration(
        threshold=t,
        target_fpr=target_fpr,
        fpr=flagged_rate(everyday if everyday is not None else benign, t),
        hard_fpr_cap=hard_fpr if everyday is not None else None,
        hard=flagged_rate(benign, t) if everyday is not None else None,
        everyday_set=everyday_set if everyday is not None else None,
        tpr=flagged_rate(harmful, t),
        calibration_set=calibration_set,
        family_fpr=family_fpr,
        by_family={f: flagged_rate(v, t) for f, v in sorted(groups.items())},
        binding=binding,
    )


def is_everyday(example: Any) -> bool:
    """An example of the everyday benign pool, as users write it: raw, or with only typos and casing changed."""
    return (example.label == "harmless" and (example.category or "").startswith("pool:")
            and all(step.family == "style" for step in example.lineage))


def is_contrast(example: Any) -> bool:
    """A harmless side of an intent pair (``SeedBank.intent_pairs``), or a variant of one."""
    return example.label == "harmless" and example.source == PAIR_SOURCE


def calibrate_input(
    val: Sequence[Any], val_scores: Sequence[float], calib: Sequence[Any], calib_scores: Sequence[float], *,
    target_fpr: float, family_fpr: float | None, hard_fpr: float | None,
) -> Calibration:
    """The input classifier's calibration, shared by the pipeline and red-team retraining: two-sided (everyday pool
    traffic at ``target_fpr``, hard neighbours capped at ``hard_fpr``) when ``hard_fpr`` is set, else one-sided over
    all harmless validation examples and the extra benign variants.

    The harmless sides of intent pairs are left out of every bound and reported as ``contrast``. They are written
    to differ from a harmful request only in its intent clause, so a few dozen of them set the top of the benign tail
    and the threshold would follow how many pairs a constitution has, not its users' traffic (design/028)."""
    benign = [(e, s) for e, s in zip(val, val_scores, strict=True) if e.label == "harmless"]
    benign += list(zip(calib, calib_scores, strict=True))
    contrast = [s for e, s in benign if is_contrast(e)]
    benign = [(e, s) for e, s in benign if not is_contrast(e)]
    harmful = [s for e, s in zip(val, val_scores, strict=True) if e.label == "harmful"]
    if hard_fpr is None:
        hard = benign
        everyday = None
    else:
        hard = [(e, s) for e, s in benign if not is_everyday(e)]
        everyday = [s for e, s in benign if is_everyday(e)]
    cal = calibrate(
        [s for _, s in hard], harmful, target_fpr=target_fpr,
        calibration_set="val split harmless examples plus extra augmented variants of them (synthetic)"
        if everyday is None else "hard neighbours: val split harmless constitution categories and benign variants (synthetic)",
        benign_families=[[st.family for st in e.lineage] or ["none"] for e, _ in hard], family_fpr=family_fpr,
        everyday=everyday, hard_fpr=hard_fpr,
        everyday_set=None if everyday is None else "everyday pool requests in the val split, raw or with typos/casing",
    )
    return cal.model_copy(update={"contrast": flagged_rate(contrast, cal.threshold)}) if contrast else cal


def is_refusal_exchange(example: Any, harmful_categories: Collection[str]) -> bool:
    """A harmless response to a harmful request: a refusal or a deflection. Halting it refuses no harmless user (the
    user gets the guard's refusal instead of the model's), so it is reported, not counted as a false positive."""
    return example.label == "harmless" and example.category in harmful_categories


def calibrate_output(
    val: Sequence[Any], scores: Sequence[float], *, harmful_categories: Collection[str], target_fpr: float,
    refusal_fpr: float | None = None,
) -> Calibration:
    """The output classifier's calibration: ``target_fpr`` on harmless answers to harmless requests (helpful answers,
    everyday pool, out-of-scope compliance, style twins); refusals to harmful requests are reported as ``hard`` and
    bound only when ``refusal_fpr`` is given."""
    answers = [s for e, s in zip(val, scores, strict=True) if e.label == "harmless" and not is_refusal_exchange(e, harmful_categories)]
    refusals = [s for e, s in zip(val, scores, strict=True) if is_refusal_exchange(e, harmful_categories)]
    harmful = [s for e, s in zip(val, scores, strict=True) if e.label == "harmful"]
    return calibrate(
        refusals, harmful, target_fpr=target_fpr,
        calibration_set="output val split: refusals and deflections of harmful requests (flagging one changes no "
        "harmless user's answer)",
        everyday=answers, hard_fpr=refusal_fpr,
        everyday_set="output val split: harmless answers to harmless requests (helpful answers, everyday pool, "
        "out-of-scope compliance, style twins)",
    )


# --- verdicts and the policy --------------------------------------------------------------------------------------
class Verdict(BaseModel):
    """The guard's decision about one prompt or response."""

    model_config = ConfigDict(frozen=True)
    allowed: bool = Field(description="False when the guard blocks.")
    stage: Stage = Field(description="Which classifier decided: 'input' or 'output'.")
    score: float = Field(description="Classifier score in [0, 1]; higher is more likely harmful.")
    threshold: float = Field(description="The calibrated threshold; blocked when score > threshold.")
    category: str | None = Field(default=None, description="Best-guess harmful category when blocked.")
    stop_char: int | None = Field(default=None, description="Output stage: character offset where release stopped.")
    latency_ms: float = Field(default=0.0, description="Time the check took.")
    escalated: bool | None = Field(
        default=None, description="Input stage of a guard with a cascade: whether stage 2 was consulted (else None).")
    unscreened: list[str] = Field(
        default_factory=list,
        description="Content parts the text classifiers could not read, with where they sit ('prompt[1]: "
        "image_url', 'response: input_audio'); the verdict covers only the text. Empty for text-only input.")


class Policy(BaseModel):
    """Thresholds per stage; turns scores into verdicts."""

    model_config = ConfigDict(frozen=True)
    input_threshold: float = Field(description="Input stage threshold.")
    output_threshold: float | None = Field(default=None, description="Output stage threshold.")
    history_margin: float = Field(
        default=HISTORY_MARGIN, ge=0.0,
        description="Logits by which the whole conversation is judged more strictly than the newest request (with "
        "the turns just before it): earlier turns were screened when they were new, and a long harmless biology "
        "conversation must not block every later question. 0 judges both alike.",
    )

    probe_weight: float | None = Field(default=None, description="Weight of a probe's logit in the output ensemble.")
    ensemble_threshold: float | None = Field(
        default=None, description="The output ensemble's own calibrated threshold (a guard with a probe stage)."
    )

    escalate_threshold: float | None = Field(
        default=None, description="Cascade: stage-1 input scores above this are escalated to stage 2.")
    cascade_weight: float | None = Field(default=None, description="Cascade: weight of stage 2's logit in the ensemble.")
    cascade_threshold: float | None = Field(default=None, description="Cascade: the ensemble's calibrated threshold.")

    @property
    def has_cascade(self) -> bool:
        return None not in (self.escalate_threshold, self.cascade_weight, self.cascade_threshold)

    def escalates(self, stage1: float) -> bool:
        """Whether a stage-1 input score is sent on to stage 2 (always False without a cascade)."""
        return self.has_cascade and flagged(stage1, self.escalate_threshold)  # type: ignore[arg-type]

    def cascade_score(self, stage1: float, stage2: float) -> float:
        """An escalated prompt's score: the stage-1/stage-2 ensemble, moved onto stage 1's scale (so that
        ``input_threshold`` decides it as it decides everything else)."""
        e = ensemble(stage1, stage2, self.cascade_weight)  # type: ignore[arg-type]
        return discounted(e, logit(self.cascade_threshold) - logit(self.input_threshold))  # type: ignore[arg-type]

    def output_score(self, classifier: float, probe: float | None = None) -> float:
        """The score an output decision is made on: the classifier's, or, with a probe score and a calibrated
        ensemble, the ensemble's, moved onto the classifier's scale (so that ``output_threshold`` decides both)."""
        if probe is None or self.ensemble_threshold is None or self.probe_weight is None or self.output_threshold is None:
            return classifier
        e = ensemble(classifier, probe, self.probe_weight)
        return discounted(e, logit(self.ensemble_threshold) - logit(self.output_threshold))

    def threshold(self, stage: Stage) -> float:
        t = self.input_threshold if stage == "input" else self.output_threshold
        if t is None:
            raise CcguardError(f"this guard has no {stage} threshold")
        return t

    def flags(self, stage: Stage, score: float) -> bool:
        return flagged(score, self.threshold(stage))

    def decide(
        self, stage: Stage, score: float, *, category: str | None = None, stop_char: int | None = None, latency_ms: float = 0.0
    ) -> Verdict:
        blocked = self.flags(stage, score)
        return Verdict(
            allowed=not blocked,
            stage=stage,
            score=score,
            threshold=self.threshold(stage),
            category=category if blocked else None,
            stop_char=stop_char if blocked else None,
            latency_ms=latency_ms,
        )

    def decide_input(self, new: Sequence[Any], history: Sequence[Any] = (), *, latency_ms: float = 0.0,
                     escalated: bool | None = None) -> Verdict:
        """An input verdict from the scores of the texts a prompt is screened as (each has ``score`` and
        ``category``; with a cascade, escalated texts carry their ``cascade_score``): texts with new content count in
        full, texts made only of earlier turns are discounted by ``history_margin``. The verdict carries the highest
        of them, and its category."""
        best, score = None, -1.0
        for part, old in [(x, False) for x in new] + [(x, True) for x in history]:
            if (s := self.input_part_score(part.score, old)) > score:
                best, score = part, s
        if best is None:
            raise ValueError("decide_input needs at least one score")
        v = self.decide("input", score, category=best.category, latency_ms=latency_ms)
        return v if escalated is None else v.model_copy(update={"escalated": escalated})

    def input_part_score(self, score: float, history: bool) -> float:
        """A screened text's stage-1 score as the decision weighs it (earlier turns discounted)."""
        return discounted(score, self.history_margin) if history and self.history_margin else score

    def failed(self, stage: Stage, *, fail_open: bool) -> Verdict:
        """The verdict when a classifier could not score: allow with ``fail_open``, else block."""
        thr = self.input_threshold if stage == "input" else (self.output_threshold or 0.0)
        return Verdict(allowed=fail_open, stage=stage, score=0.0 if fail_open else 1.0, threshold=thr)


@dataclass
class OutputGate:
    """The output policy applied to one response stream (one per stream; never shared).

    The ``StreamSession`` scores chunks as text arrives; the gate releases a chunk's text only once its score is
    allowed, and halts at the first flagged chunk: nothing from that chunk's first character on is ever released.
    With ``decode_every`` (the prompt asked for an encoded answer), the decoded view of the text about to be
    released is scored every so many characters and at the end, before any of it is released."""

    session: Any  # a StreamSession
    policy: Policy
    decode_every: int = 0
    # A local upstream's probe (ccguard.probes.ProbeTrack), fed by ``add_probe`` as the upstream generates.
    probe: Any = None
    halted: bool = False
    stop_char: int | None = None
    released_chars: int = 0
    max_score: float = 0.0  # the decision score (the ensemble's, with a probe)
    classifier_max: float = 0.0
    _decoded_at: int = 0

    def add_probe(self, logits: Sequence[float]) -> None:
        """Probe logits of newly generated tokens; they count from the next scored chunk on."""
        if self.probe is not None:
            self.probe.add(logits)

    @property
    def text(self) -> str:
        return self.session.text

    def releasable(self) -> str:
        """Text that has been scored and may be released."""
        return self.session.text[: self.released_chars]

    def _halt(self, at: int) -> None:
        self.halted, self.stop_char, self.released_chars = True, at, min(self.released_chars, at)

    def _apply(self, chunk: Any) -> None:
        """The decision on one scored chunk (a ``ChunkScore``): release its text, or halt at its first character."""
        self.classifier_max = max(self.classifier_max, chunk.score)
        score = self.policy.output_score(self.classifier_max, self.probe.score if self.probe is not None else None)
        self.max_score = max(self.max_score, score)
        if self.policy.flags("output", score):
            self._halt(chunk.start_char)
        else:
            self.released_chars = chunk.end_char

    def _check_decoded(self, before: int, final: bool) -> None:
        if not self.decode_every or self.halted or self.released_chars <= before:
            return
        if not final and self.released_chars - self._decoded_at < self.decode_every:
            return
        self._decoded_at = self.released_chars
        score = self.session.decoded_score(self.released_chars)
        if score is None:
            return
        self.max_score = max(self.max_score, score)
        if self.policy.flags("output", score):
            self._halt(before)

    def feed(self, text: str) -> None:
        """Add response text; release what scores allow."""
        feed_gates([(self, text)])

    def finish(self) -> None:
        """The stream ended: score what is left; unflagged, the whole response is released."""
        feed_gates([(self, None)])

    def verdict(self, *, category: str | None = None, latency_ms: float = 0.0) -> Verdict:
        return self.policy.decide("output", self.max_score, category=category, stop_char=self.stop_char,
                                  latency_ms=latency_ms)


def feed_gates(feeds: Sequence[tuple[OutputGate, str | None]]) -> None:
    """Feed several streams' gates at once: each gets its text (or None: its stream ended). Their chunks are scored
    round by round, one chunk per stream and round, in one batched model call (``classifiers.output.score_chunks``),
    and each gate decides on its own chunks in order, exactly as if it had been fed alone."""
    from ccguard.classifiers.output import score_chunks

    active: list[tuple[OutputGate, bool, int]] = []
    for gate, text in feeds:
        if gate.halted:
            continue
        if text is not None:
            gate.session.add(text)
        active.append((gate, text is None, gate.released_chars))
    while True:
        todo = [(g, span) for g, final, _ in active if not g.halted and (span := g.session.take_chunk(final)) is not None]
        if not todo:
            break
        scores = score_chunks([(g.session, span.ids) for g, span in todo])
        for (g, span), sc in zip(todo, scores, strict=True):
            g._apply(g.session.record(span, g.session.windowed(span, sc)))
    for gate, final, before in active:
        if final and not gate.halted:
            gate.released_chars = len(gate.session.text)
        gate._check_decoded(before, final)
