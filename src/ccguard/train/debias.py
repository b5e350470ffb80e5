"""Example weights against the data's style shortcut: learn less from what style alone already predicts.

The shortcut audit's bag-of-words model (``ccguard.evaluate.shortcut``: topic words masked) is the *bias-only
model*. Fitted out of fold (rows of one group never predict each other), it gives every training row the probability
``p`` it puts on the row's true label from style alone. The row's weight is ``(1 - p) ** strength``, rescaled to mean
1 within each label, so class balance is unchanged: a harmful answer whose phrasing alone gives it away counts
little, one that reads like a harmless answer counts most. This is the example reweighting of Clark, Yatskar and
Zettlemoyer (2019), "Don't Take the Easy Way Out: Ensemble Based Methods for Avoiding Known Dataset Biases"
(EMNLP), with the masked audit model as the known bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ccguard.errors import CcguardError
from ccguard.evaluate.metrics import auroc
from ccguard.evaluate.shortcut import Side, _fit, _text, mask_topic
from ccguard.records import Example

FOLDS = 5
FLOOR = 0.02  # of the raw weight: no row is dropped outright, however obvious its style
MAX_STRENGTH = 10.0  # beyond it FLOOR ** strength underflows and every weight is the floor's


def check_strength(strength: float, side: str) -> float:
    """``strength`` if it is a usable ``debias`` value (0 is off), else a clear error naming the field."""
    if not 0.0 <= strength <= MAX_STRENGTH:  # also false for NaN
        raise CcguardError(f"debias must be between 0 (off) and {MAX_STRENGTH:g}, not {strength!r}",
                           where=f"{side} training args: debias")
    return strength


def training_weights(rows: Sequence[Example], const: Any, side: Side, args: Any) -> tuple[list[float] | None,
                                                                                          dict[str, Any] | None]:
    """The per-row weights ``side``'s training uses under ``args`` (a TrainArgs or OutputTrainArgs) with this
    constitution's topic words masked, and their summary; (None, None) where ``args.debias`` is 0."""
    if check_strength(args.debias, side) == 0:
        return None, None
    from ccguard.evaluate.shortcut import topic_vocabulary

    return style_weights(rows, topic_vocabulary(const), side, args.debias, seed=args.seed)


def style_weights(rows: Sequence[Example], vocab: set[str], side: Side, strength: float, *, folds: int = FOLDS,
                  seed: int = 0) -> tuple[list[float], dict[str, Any]]:
    """Per-row loss weights (mean 1 within each label) and a summary: the bias model's out-of-fold AUROC, and its
    AUROC with the rows weighted as training will weigh them (how much style the weighted data still teaches)."""
    from sklearn.model_selection import GroupKFold

    rows = list(rows)
    check_strength(strength, side)
    y = np.array([int(e.label == "harmful") for e in rows])
    groups = [e.group or e.id for e in rows]
    # Too little to fit out of fold (one label, or fewer groups than folds): every row keeps weight 1.
    if strength == 0 or len(set(y.tolist())) < 2 or len(set(groups)) < folds:
        return [1.0] * len(rows), {"strength": strength, "applied": False}
    memo: dict[str, bool] = {}
    texts = [mask_topic(_text(e, side), vocab, memo) for e in rows]
    p = np.zeros(len(rows))
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for tr, te in splitter.split(texts, y, groups):
        model = _fit([texts[i] for i in tr], y[tr].tolist())
        p[te] = model.predict_proba([texts[i] for i in te])[:, 1] if model is not None else y[tr].mean()
    p_true = np.where(y == 1, p, 1.0 - p)
    w = np.maximum(1.0 - p_true, FLOOR) ** strength
    for lab in (0, 1):
        w[y == lab] /= w[y == lab].mean()
    from sklearn.metrics import roc_auc_score

    stats = {
        "strength": strength,
        "applied": True,
        "folds": folds,
        "style_auroc_oof": round(auroc(y.tolist(), p.tolist()), 4),
        "style_auroc_weighted": round(float(roc_auc_score(y, p, sample_weight=w)), 4),
        # Kish's effective sample size, as a share of the rows: how much of the data the weights still use.
        "effective_rows": round(float(w.sum() ** 2 / (w**2).sum() / len(w)), 4),
        "max_weight": round(float(w.max()), 3),
    }
    return w.tolist(), stats
