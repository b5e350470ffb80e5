"""Threshold selection: the output side counts false positives on answers to harmless requests only."""

from __future__ import annotations

import random

from ccguard.policy import calibrate_input, calibrate_output, is_refusal_exchange
from ccguard.records import Example

HARMFUL = {"agent_synthesis"}


def _ex(i: int, label: str, category: str, source: str = "seed") -> Example:
    return Example(id=f"e{i}", prompt="q", response="r", label=label, category=category, source=source, group=str(i))


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


def test_intent_pair_harmless_sides_are_reported_not_bound():
    rng = random.Random(1)
    rows, scores = [], []
    for i in range(300):  # everyday traffic
        rows.append(_ex(i, "harmless", "pool:cooking"))
        scores.append(rng.uniform(0.0, 0.3))
    for i in range(300, 800):  # hard neighbours
        rows.append(_ex(i, "harmless", "history_policy"))
        scores.append(rng.uniform(0.0, 0.8))
    for i in range(800, 900):  # harmful requests
        rows.append(_ex(i, "harmful", "agent_synthesis"))
        scores.append(rng.uniform(0.7, 1.0))
    kw = {"target_fpr": 0.005, "family_fpr": None, "hard_fpr": 0.02}
    base = calibrate_input(rows, scores, [], [], **kw)
    assert base.binding == "hard_neighbours" and base.contrast is None
    # Harmless sides of intent pairs score like the harmful requests they mirror: they would set the threshold.
    pair_rows = [_ex(i, "harmless", "history_policy", source="pair") for i in range(900, 940)]
    pair_scores = [rng.uniform(0.85, 0.99) for _ in pair_rows]
    cal = calibrate_input(rows + pair_rows, scores + pair_scores, [], [], **kw)
    assert cal.threshold == base.threshold and cal.hard.n == base.hard.n == 500
    assert cal.contrast is not None and cal.contrast.n == 40 and cal.contrast.rate > 0.5
    # Their harmful sides are harmful requests like any other and count toward the TPR.
    harmful_pair = [_ex(i, "harmful", "agent_synthesis", source="pair") for i in range(940, 960)]
    cal = calibrate_input(rows + harmful_pair, scores + [0.95] * 20, [], [], **kw)
    assert cal.tpr.n == 120 and cal.contrast is None
