"""Helpers shared by the integration tests: a real guard with other thresholds, and a threshold a stream crosses."""

from __future__ import annotations

import numpy as np

from ccguard.guard import Guard


def with_thresholds(g: Guard, inp: float | None = None, out: float | None = None) -> Guard:
    """The same classifiers under other input and/or output thresholds."""
    upd = {k: v for k, v in (("input_threshold", inp), ("output_threshold", out)) if v is not None}
    return Guard(g.manifest, g.input_classifier, g.policy.model_copy(update=upd), g.output_classifier)


def midway_threshold(g: Guard, prompt: str, text: str) -> float:
    """An output threshold that a stream of ``text`` after ``prompt`` crosses at its third chunk."""
    s = g.output_classifier.session(prompt)
    s.feed(text)
    s.finish()
    cm = np.maximum.accumulate(s.token_scores)
    return float(cm[min(len(cm) - 1, 3 * g.output_classifier.spec.chunk_tokens - 1)]) - 1e-7
