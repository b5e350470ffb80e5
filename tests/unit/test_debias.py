"""Style-debiased example weights (ccguard.train.debias) and the weighted losses they feed."""

from __future__ import annotations

import random

import pytest
import torch

from ccguard.errors import CcguardError
from ccguard.records import Example
from ccguard.train.debias import style_weights
from ccguard.train.output import prefix_loss

WORDS = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "on", "with", "as", "was", "at", "by", "this", "be", "from", "or", "an", "are"]
MARKER = "sure thing here you go"  # a phrasing only some harmful rows use: the shortcut


def _rows(n: int = 240, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        harmful = i % 2 == 0
        text = " ".join(rng.choice(WORDS) for _ in range(12)) + " sarin"
        if harmful and i % 4 == 0:
            text = f"{MARKER} {text}"
        rows.append(Example(id=f"r{i}", prompt="q", response=text, label="harmful" if harmful else "harmless",
                            category=None, source="seed", group=f"g{i // 2}", split="train"))
    return rows


def test_rows_whose_style_gives_the_label_away_weigh_less():
    rows = _rows()
    w, stats = style_weights(rows, {"sarin"}, "output", 1.0)
    marked = [x for e, x in zip(rows, w, strict=True) if MARKER in str(e.response)]
    plain_harmful = [x for e, x in zip(rows, w, strict=True) if e.label == "harmful" and MARKER not in str(e.response)]
    assert sum(marked) / len(marked) < 0.6 * sum(plain_harmful) / len(plain_harmful)
    for label in ("harmful", "harmless"):  # class balance is left as it was
        ws = [x for e, x in zip(rows, w, strict=True) if e.label == label]
        assert sum(ws) / len(ws) == pytest.approx(1.0)
    assert stats["applied"] and stats["style_auroc_oof"] > 0.65
    assert stats["style_auroc_weighted"] < stats["style_auroc_oof"] - 0.1
    assert 0.3 < stats["effective_rows"] < 1.0


def test_strength_zero_or_one_label_leaves_every_weight_at_one():
    rows = _rows(60)
    assert style_weights(rows, {"sarin"}, "output", 0.0) == ([1.0] * 60, {"strength": 0.0, "applied": False})
    harmless = [e for e in rows if e.label == "harmless"]
    assert style_weights(harmless, {"sarin"}, "output", 1.0)[0] == [1.0] * len(harmless)


def test_fewer_groups_than_folds_leaves_every_weight_at_one():
    rows = [e.model_copy(update={"group": f"g{i % 4}"}) for i, e in enumerate(_rows(60))]  # 4 groups, 5 folds
    weights, stats = style_weights(rows, {"sarin"}, "output", 1.0)
    assert weights == [1.0] * 60 and stats["applied"] is False


@pytest.mark.parametrize("strength", [-0.5, float("nan"), 11.0])
def test_an_unusable_strength_is_refused_by_its_field_name(strength):
    with pytest.raises(CcguardError, match="debias must be between 0") as err:
        style_weights(_rows(60), {"sarin"}, "input", strength)
    assert "input training args: debias" in str(err.value)


def test_example_weights_scale_each_sequence_of_the_prefix_loss():
    torch.manual_seed(0)
    values = torch.randn(3, 5, requires_grad=True)
    mask = torch.ones(3, 5)
    y = torch.tensor([1.0, 0.0, 1.0])
    plain = prefix_loss(values, mask, y, 0.5, 2.0)
    assert torch.allclose(plain, prefix_loss(values, mask, y, 0.5, 2.0, torch.ones(3)))
    weighted = prefix_loss(values, mask, y, 0.5, 2.0, torch.tensor([1.0, 0.0, 3.0]))
    (g,) = torch.autograd.grad(weighted, values)
    (g1,) = torch.autograd.grad(plain, values)
    assert torch.all(g[1] == 0) and torch.allclose(g[0], g1[0]) and torch.allclose(g[2], 3 * g1[2])
