"""Turn scores on held-out data into a threshold at a target false-positive rate.

Two-sided when an everyday benign set is given: the target FPR is the rate on *everyday* traffic (what users
actually send), and the FPR on *hard neighbours* (harmless topics next to the harmful ones, benign text in
ciphers and templates) is bounded by its own, looser cap. The threshold is the stricter of the two; the
calibration records which one bound.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ccguard.evaluate.metrics import Rate, flagged_rate, threshold_at_fpr


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


def calibrate_input(
    val: Sequence[Any], val_scores: Sequence[float], calib: Sequence[Any], calib_scores: Sequence[float], *,
    target_fpr: float, family_fpr: float | None, hard_fpr: float | None,
) -> Calibration:
    """The input classifier's calibration, shared by the pipeline and red-team retraining: two-sided (everyday pool
    traffic at ``target_fpr``, hard neighbours capped at ``hard_fpr``) when ``hard_fpr`` is set, else one-sided over
    all harmless validation examples and the extra benign variants."""
    benign = [(e, s) for e, s in zip(val, val_scores, strict=True) if e.label == "harmless"]
    benign += list(zip(calib, calib_scores, strict=True))
    harmful = [s for e, s in zip(val, val_scores, strict=True) if e.label == "harmful"]
    if hard_fpr is None:
        hard = benign
        everyday = None
    else:
        hard = [(e, s) for e, s in benign if not is_everyday(e)]
        everyday = [s for e, s in benign if is_everyday(e)]
    return calibrate(
        [s for _, s in hard], harmful, target_fpr=target_fpr,
        calibration_set="val split harmless examples plus extra augmented variants of them (synthetic)"
        if everyday is None else "hard neighbours: val split harmless constitution categories and benign variants (synthetic)",
        benign_families=[[st.family for st in e.lineage] or ["none"] for e, _ in hard], family_fpr=family_fpr,
        everyday=everyday, hard_fpr=hard_fpr,
        everyday_set=None if everyday is None else "everyday pool requests in the val split, raw or with typos/casing",
    )


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
