"""Metrics with confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Rates and thresholds are the policy's own statistics; evaluation reuses them.
from ccguard.policy import Rate, flagged_rate, threshold_at_fpr, wilson

__all__ = ["Rate", "auprc", "auroc", "flagged_rate", "threshold_at_fpr", "tpr_at_fpr", "wilson"]


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
