"""Turn scores on held-out data into a threshold at a target false-positive rate."""

from __future__ import annotations

from collections.abc import Sequence

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
    binding: str = Field(default="overall", description="Which constraint set the threshold: 'overall' or a family.")


def calibrate(
    benign: Sequence[float],
    harmful: Sequence[float],
    *,
    target_fpr: float,
    calibration_set: str,
    benign_families: Sequence[Sequence[str]] | None = None,
    family_fpr: float | None = None,
    min_family_size: int = 50,
) -> Calibration:
    """Choose the threshold that flags at most ``target_fpr`` of ``benign`` overall and, when ``family_fpr`` is
    given, at most ``family_fpr`` of the benign examples of each transform family (families smaller than
    ``min_family_size`` are reported but do not bind). A user who wraps a harmless request in role-play or a cipher
    is still a harmless user: the FPR promise should hold for them too, not only on average."""
    t = threshold_at_fpr(benign, target_fpr)
    binding = "overall"
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
        fpr=flagged_rate(benign, t),
        tpr=flagged_rate(harmful, t),
        calibration_set=calibration_set,
        family_fpr=family_fpr,
        by_family={f: flagged_rate(v, t) for f, v in sorted(groups.items())},
        binding=binding,
    )
