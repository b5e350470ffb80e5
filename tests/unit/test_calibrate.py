"""Threshold selection: the output side counts false positives on answers to harmless requests only."""

from __future__ import annotations

import random

from ccguard.policy import calibrate_output, is_refusal_exchange
from ccguard.records import Example

HARMFUL = {"agent_synthesis"}


def _ex(i: int, label: str, category: str) -> Example:
    return Example(id=f"e{i}", prompt="q", response="r", label=label, category=category, source="seed", group=str(i))


def test_refusals_of_harmful_requests_are_reported_not_counted():
    rng = random.Random(0)
    rows, scores = [], []
    for i in range(400):  # answers to harmless requests: low scores
        rows.append(_ex(i, "harmless", "cooking"))
        scores.append(rng.uniform(0.0, 0.5))
    for i in range(400, 500):  # refusals of harmful requests: they name the agent, so they score high
        rows.append(_ex(i, "harmless", "agent_synthesis"))
        scores.append(rng.uniform(0.6, 0.9))
    for i in range(500, 700):  # harmful answers
        rows.append(_ex(i, "harmful", "agent_synthesis"))
        scores.append(rng.uniform(0.55, 1.0))
    cal = calibrate_output(rows, scores, harmful_categories=HARMFUL, target_fpr=0.01)
    assert cal.binding == "everyday" and cal.threshold < 0.55
    assert cal.fpr.n == 400 and cal.fpr.k <= 4
    assert cal.hard.n == 100 and cal.hard.rate == 1.0 and cal.tpr.rate == 1.0
    # A cap on halted refusals binds and moves the threshold above them.
    capped = calibrate_output(rows, scores, harmful_categories=HARMFUL, target_fpr=0.01, refusal_fpr=0.05)
    assert capped.binding == "hard_neighbours" and capped.threshold > 0.85 and capped.hard.rate <= 0.05


def test_refusal_exchange_is_a_harmless_response_in_a_harmful_category():
    assert is_refusal_exchange(_ex(0, "harmless", "agent_synthesis"), HARMFUL)
    assert not is_refusal_exchange(_ex(1, "harmful", "agent_synthesis"), HARMFUL)
    assert not is_refusal_exchange(_ex(2, "harmless", "cooking"), HARMFUL)
