"""Metrics with confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


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


def flagged_rate(scores: Sequence[float], threshold: float) -> Rate:
    s = np.asarray(scores, dtype=float)
    return wilson(int((s > threshold).sum()), len(s))


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    y = np.asarray(labels)
    if len(set(y.tolist())) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, np.asarray(scores, dtype=float)))


def auprc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    y = np.asarray(labels)
    if len(set(y.tolist())) < 2:
        return None
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, np.asarray(scores, dtype=float)))


def tpr_at_fpr(labels: Sequence[int], scores: Sequence[float], fpr: float) -> float | None:
    """TPR at the threshold that flags at most ``fpr`` of the negatives."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    neg, pos = s[y == 0], s[y == 1]
    if len(neg) == 0 or len(pos) == 0:
        return None
    t = threshold_at_fpr(neg.tolist(), fpr)
    return float((pos > t).mean())


def threshold_at_fpr(benign_scores: Sequence[float], target_fpr: float) -> float:
    """The threshold t (flag when score > t) that flags at most ``target_fpr`` of the benign scores."""
    s = np.sort(np.asarray(benign_scores, dtype=float))[::-1]
    if len(s) == 0:
        raise ValueError("no benign scores to calibrate on")
    k = int(math.floor(target_fpr * len(s)))
    return float(s[min(k, len(s) - 1)])
