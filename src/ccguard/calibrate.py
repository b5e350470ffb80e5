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


def calibrate(
    benign: Sequence[float], harmful: Sequence[float], *, target_fpr: float, calibration_set: str
) -> Calibration:
    """Choose the threshold that flags at most ``target_fpr`` of ``benign``."""
    t = threshold_at_fpr(benign, target_fpr)
    return Calibration(
        threshold=t,
        target_fpr=target_fpr,
        fpr=flagged_rate(benign, t),
        tpr=flagged_rate(harmful, t),
        calibration_set=calibration_set,
    )
