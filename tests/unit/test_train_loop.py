import random

import torch

from ccguard.train.loop import BucketBatchSampler, make_optimizer


def _groups(model: torch.nn.Module) -> list[dict]:
    return [{"params": [model.weight], "lr": 1e-2}, {"params": [model.bias], "lr": 1e-1}]


def test_optimizer_is_fused_on_cpu_and_steps_like_plain_adamw():
    torch.manual_seed(0)
    a = torch.nn.Linear(16, 4)
    b = torch.nn.Linear(16, 4)
    b.load_state_dict(a.state_dict())
    fused = make_optimizer(_groups(a), 0.01, "cpu")
    plain = torch.optim.AdamW(_groups(b), weight_decay=0.01, foreach=False)
    assert fused.defaults["fused"] is True
    x, y = torch.randn(32, 16), torch.randn(32, 4)
    for _ in range(5):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    # Both groups moved, each at its own learning rate, and the fused kernel did what plain AdamW does.
    assert not torch.equal(a.bias, torch.nn.Linear(16, 4).bias)
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.bias, b.bias, rtol=1e-5, atol=1e-6)


def test_optimizer_is_not_fused_where_torch_has_no_fused_kernel():
    # 'meta' stands in for a device without one; the optimizer is built, not stepped.
    opt = make_optimizer(_groups(torch.nn.Linear(4, 2)), 0.0, "meta")
    assert not opt.defaults["fused"]


def test_bucketed_batches_cover_every_item_once_with_little_padding():
    rng = random.Random(0)
    lengths = [rng.randint(1, 200) for _ in range(1000)]
    batches = list(BucketBatchSampler(lengths, 8, 16, random.Random(1)))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert len(batches) == len(BucketBatchSampler(lengths, 8, 16, random.Random(1)))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.1 * sum(lengths)


def test_next_token_loss_over_two_shards_averages_to_the_whole_batch():
    """Under two processes each shard's loss is divided by the mean count of predicted tokens over the shards, so
    the averaged gradients (the mean of the two losses) are the whole batch's; a mean per shard would not be when the
    shards hold different numbers of labelled tokens."""
    import torch

    from ccguard.train.output import ntp_loss

    g = torch.Generator().manual_seed(0)
    lm = torch.randn(4, 7, 11, generator=g)
    ids = torch.randint(0, 11, (4, 7), generator=g)
    mask = torch.zeros(4, 7)
    mask[0, 1:] = 1  # shard 1: many labelled tokens
    mask[1, 2:] = 1
    mask[2, 5:] = 1  # shard 2: few
    mask[3, 6:] = 1
    whole = ntp_loss(lm, ids, mask)
    halves = [(lm[:2], ids[:2], mask[:2]), (lm[2:], ids[2:], mask[2:])]
    counts = [(m[:, 1:] > 0).sum().float() for _, _, m in halves]
    mean_count = torch.stack(counts).mean()
    shared = torch.stack([ntp_loss(a, b, m, mean_count) for a, b, m in halves]).mean()
    per_shard = torch.stack([ntp_loss(a, b, m) for a, b, m in halves]).mean()
    assert torch.allclose(shared, whole)
    assert not torch.allclose(per_shard, whole)
    # A batch with no labelled token adds nothing instead of NaN.
    assert ntp_loss(lm, ids, torch.zeros(4, 7)).item() == 0.0
