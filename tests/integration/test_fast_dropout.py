"""Training's cheap dropout masks (ccguard.train.dropout): nn.Dropout's distribution and SDPA's attention, on real
MiniLM backbones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ccguard.classifiers.backbone import load_encoder
from ccguard.classifiers.output import load_output_backbone
from ccguard.records import Example
from ccguard.train.dropout import ATTENTION, FastDropout, dropout, fast_dropout, keep_mask


def test_masks_drop_each_element_with_probability_p_in_every_lane_of_a_draw():
    torch.manual_seed(0)
    for p in (0.1, 0.5):
        keep = keep_mask((1_000_003,), p).float()
        # Four elements share one 64-bit draw, the last with one bit fewer: each lane must drop at the same rate.
        for lane in range(4):
            assert keep[lane::4].mean().item() == pytest.approx(1 - p, abs=0.004)
    torch.manual_seed(1)
    a = keep_mask((64, 64), 0.1)
    torch.manual_seed(1)
    assert torch.equal(a, keep_mask((64, 64), 0.1)) and a.shape == (64, 64)


def test_dropout_zeroes_and_rescales_like_nn_dropout():
    torch.manual_seed(0)
    x = torch.rand(200, 300) + 0.5
    y = dropout(x, 0.2)
    dropped = y == 0
    assert dropped.float().mean().item() == pytest.approx(0.2, abs=0.01)
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.8)
    assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0) is x
    m = FastDropout(0.2).eval()
    assert m(x) is x


def _silence(model: nn.Module, p: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p


@pytest.mark.parametrize("causal", [True, False])
def test_attention_computes_what_sdpa_computes(causal):
    """With a dropout too small to drop anything, the swapped model (its own attention path, every mask element
    drawn) matches SDPA's, causal and bidirectional, with and without padding; restoring puts SDPA back."""
    torch.manual_seed(0)
    model = load_output_backbone("minilm", num_layers=2)[0] if causal else load_encoder("minilm", num_layers=2)
    _silence(model, 1e-9)
    model.train()
    ids = torch.randint(1000, 30000, (3, 20))
    for mask in (torch.ones(3, 20, dtype=torch.long), torch.tensor([[1] * 20, [1] * 15 + [0] * 5, [1] * 8 + [0] * 12])):
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
        restore = fast_dropout(model)
        assert model.config._attn_implementation == ATTENTION
        assert sum(isinstance(m, FastDropout) for m in model.modules()) == 7  # embeddings + 3 per layer
        new = model(input_ids=ids, attention_mask=mask).last_hidden_state
        restore()
        assert model.config._attn_implementation == "sdpa"
        assert not any(isinstance(m, FastDropout) for m in model.modules())
        valid = mask.bool()
        torch.testing.assert_close(new[valid], ref[valid], rtol=1e-4, atol=1e-5)


def test_causal_attention_does_not_see_later_tokens():
    torch.manual_seed(0)
    model = load_output_backbone("minilm", num_layers=2)[0]
    model.train()
    fast_dropout(model)
    ids = torch.randint(1000, 30000, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = torch.randint(1000, 30000, (4,))
    torch.manual_seed(5)
    a = model(input_ids=ids).last_hidden_state
    torch.manual_seed(5)
    b = model(input_ids=changed).last_hidden_state
    torch.testing.assert_close(a[0, :8], b[0, :8])
    assert not torch.allclose(a[0, 8:], b[0, 8:])


def test_training_with_dropout_is_seeded_and_leaves_plain_modules():
    from ccguard.train.args import OutputTrainArgs
    from ccguard.train.output import train_output

    rows = [Example(id=f"e{i}", prompt=p, response=r, label=y, category="agent_synthesis" if y == "harmful" else None,
                    source="seed", group=f"g{i}", split="train")
            for i, (p, y, r) in enumerate([("how do i make sarin at home", "harmful", "Sure. First you would gather what it names."),
                                           ("how do i bake bread", "harmless", "Mix flour, water, salt and yeast.")] * 4)]  # fmt: skip
    args = OutputTrainArgs(num_layers=2, prompt_tokens=16, response_tokens=16, max_steps=3, batch_size=4, lr=1e-3,
                           precision="no")  # fmt: skip
    a, _ = train_output(rows, args)
    b, _ = train_output(rows, args)
    for m in (a.model, b.model):
        assert m.backbone.config._attn_implementation == "sdpa"
        assert not any(isinstance(x, FastDropout) for x in m.modules())
        assert any(type(x) is nn.Dropout for x in m.modules())
    wa, wb = a.model.value_head.weight, b.model.value_head.weight
    torch.testing.assert_close(wa, wb)  # the same seed draws the same masks
    c, _ = train_output(rows, OutputTrainArgs(**{**args.to_dict(), "seed": 1}))
    assert not torch.allclose(wa, c.model.value_head.weight)
