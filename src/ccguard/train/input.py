"""Fine-tune the input classifier on accelerate.

Long prompts are trained the way they are scored: as token windows. A window of a harmful example is labelled
harmful only when it overlaps the base request it wraps; the rest of a jailbreak template is, on its own, harmless.
Examples that a decoded view can read (base64, ciphers, ...) are trained on that view, because that is the view
that carries their meaning at scoring time; harmless ones are also trained raw.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn

from ccguard.classifiers.backbone import (
    freeze_lower,
    load_encoder,
    load_tokenizer,
    resolve_backbone,
    resolve_precision,
    torch_setup,
)
from ccguard.classifiers.input import InputClassifier, InputModel, WindowSpec, pad_batch
from ccguard.records import Example, render_prompt
from ccguard.synth.conversations import ANCHOR_LAST_TURN
from ccguard.train.args import TrainArgs
from ccguard.train.dropout import fast_dropout
from ccguard.train.loop import make_accelerator, make_loader, make_optimizer, optimizer_step
from ccguard.views import view_names


@dataclass(frozen=True)
class Instance:
    ids: list[int]
    label: float
    category: int  # index among harmful categories, -1 when not harmful
    weight: float = 1.0  # loss weight (ccguard.train.debias)


def _windows_with_spans(clf: InputClassifier, text: str) -> list[tuple[list[int], int, int]]:
    enc = clf.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    ids, offs = enc["input_ids"], enc["offset_mapping"]
    body = clf.body_len
    if len(ids) <= body:
        return [(ids, 0, len(text))]
    stride = clf.spec.stride
    starts = list(range(0, len(ids) - body, stride)) + [len(ids) - body]
    return [(ids[s : s + body], offs[s][0], offs[s + body - 1][1]) for s in starts]


def instances_for(clf: InputClassifier, ex: Example, cat_index: dict[str, int], rng: random.Random,
                  weight: float = 1.0) -> list[Instance]:
    """The training inputs one example contributes, each with the example's loss ``weight``."""
    return [replace(i, weight=weight) if weight != 1.0 else i for i in _instances(clf, ex, cat_index, rng)]


def _instances(clf: InputClassifier, ex: Example, cat_index: dict[str, int], rng: random.Random) -> list[Instance]:
    harmful = ex.label == "harmful"
    y = 1.0 if harmful else 0.0
    cat = cat_index.get(ex.category or "", -1) if harmful else -1
    text = render_prompt(ex.prompt)
    views = clf.views(text)
    texts = [views[-1][1]] + ([text] if len(views) > 1 and not harmful else [])
    out: list[Instance] = []
    for t in texts:
        wins = _windows_with_spans(clf, t)
        if len(wins) == 1:
            out.append(Instance(clf.with_specials(wins[0][0]), y, cat))
            continue
        if not harmful:
            for ids, *_ in rng.sample(wins, min(2, len(wins))):
                out.append(Instance(clf.with_specials(ids), 0.0, -1))
            continue
        base = (ex.base or "").lower()
        pos = t.lower().find(base) if base else -1
        if pos < 0 and t == text and ex.lineage and ex.lineage[0].name in ANCHOR_LAST_TURN:
            # A crescendo whose last turn rewords the request ("it"): the harm is in that turn read with what came
            # before, never in the earlier turns alone (they are harmless build-up).
            last = render_prompt(ex.prompt[-1:]).lower()
            base, pos = last, t.lower().rfind(last)
        if pos < 0:
            # The request could not be located (typos, shuffles): fall back to the head and tail of the prompt.
            ids = clf.token_ids(t)
            half = clf.body_len // 2
            out.append(Instance(clf.with_specials(ids[:half] + ids[-(clf.body_len - half) :]), y, cat))
            continue
        end = pos + len(base)
        hit = [w for w in wins if w[1] < end and w[2] > pos]
        miss = [w for w in wins if w[2] <= pos or w[1] >= end]
        for ids, *_ in rng.sample(hit, min(2, len(hit))):
            out.append(Instance(clf.with_specials(ids), 1.0, cat))
        if miss:
            out.append(Instance(clf.with_specials(rng.choice(miss)[0]), 0.0, -1))
    return out


def _collate(batch: list[Instance], pad: int) -> tuple[torch.Tensor, ...]:
    ids, mask = pad_batch([b.ids for b in batch], pad)
    return (ids, mask, torch.tensor([b.label for b in batch]), torch.tensor([b.category for b in batch]),
            torch.tensor([b.weight for b in batch]))


def train_input(
    train: list[Example],
    harmful_categories: list[str],
    args: TrainArgs,
    *,
    progress: Callable[[int, int, float], None] | None = None,
    init: InputClassifier | None = None,
    weights: list[float] | None = None,
) -> tuple[InputClassifier, dict[str, float]]:
    """Fine-tune an input classifier (from the backbone, or further from ``init``); returns it and stats. ``weights``
    (one per example of ``train``) scale each example's loss."""
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    if weights is not None and len(weights) != len(train):
        raise ValueError(f"{len(weights)} weights for {len(train)} training examples")
    t_prep = time.perf_counter()
    torch_setup()
    set_seed(args.seed)
    rng = random.Random(args.seed)
    accelerator, autocast = make_accelerator(args.precision)
    if init is not None:
        model, tokenizer, spec = init.model, init.tokenizer, init.spec
    else:
        encoder = load_encoder(args.backbone, num_layers=args.num_layers)
        tokenizer = load_tokenizer(resolve_backbone(args.backbone))
        model = InputModel(encoder, len(harmful_categories))
        spec = WindowSpec(max_len=args.max_len, stride=args.stride, view_names=tuple(view_names()))
    clf = InputClassifier(model, tokenizer, spec, harmful_categories)

    cat_index = {c: i for i, c in enumerate(harmful_categories)}
    pairs = list(zip(train, weights or [1.0] * len(train), strict=True))
    if args.max_examples is not None and len(pairs) > args.max_examples:
        pairs = rng.sample(pairs, args.max_examples)
    examples = [ex for ex, _ in pairs]
    items = [inst for ex, w in pairs for inst in instances_for(clf, ex, cat_index, rng, w)]
    n_pos = sum(i.label for i in items)
    steps_per_epoch = math.ceil(len(items) / args.batch_size)
    total = args.max_steps or max(1, int(steps_per_epoch * args.epochs))

    head_params = list(model.head.parameters())
    head_ids = {id(p) for p in head_params}
    if args.freeze_embeddings:
        # A large multilingual vocabulary stays as pretrained: its table dwarfs the rest of the model, and the
        # languages the data barely covers keep the alignment that lets English training carry over to them.
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    freeze_lower(model.encoder, args.freeze_layers)
    body_params = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    opt = make_optimizer([{"params": body_params, "lr": args.lr}, {"params": head_params, "lr": args.head_lr}],
                         args.weight_decay, accelerator.device)
    sched = get_linear_schedule_with_warmup(opt, int(total * args.warmup_ratio), total)
    # Cheaper dropout masks on the CPU: the same distribution, a MiniLM step 12-16% shorter (ccguard.train.dropout).
    restore = fast_dropout(model) if accelerator.device.type == "cpu" else (lambda: None)
    model, opt, sched = accelerator.prepare(model, opt, sched)
    pad = tokenizer.pad_token_id
    loader = make_loader(accelerator, items, [len(i.ids) for i in items], args.batch_size, 32, rng,
                         partial(_collate, pad=pad), args.seed)
    # Balance the classes so the calibrated threshold is not fighting a skewed prior.
    pos_weight = torch.tensor((len(items) - n_pos) / max(1.0, n_pos))
    bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
    ce = nn.CrossEntropyLoss(reduction="none")

    model.train()
    step, t0, ema = 0, time.perf_counter(), None
    while step < total:
        for ids, mask, y, cats, w in loader:
            if step >= total:
                break
            with autocast():
                logits = model(ids, mask).float()
            loss = (bce(logits[:, 0], y) * w).mean()
            has_cat = cats >= 0
            if has_cat.any() and logits.shape[1] > 1:
                loss = loss + args.category_loss_weight * (ce(logits[has_cat, 1:], cats[has_cat]) * w[has_cat]).mean()
            ema = optimizer_step(accelerator, model, opt, sched, loss, ema)
            step += 1
            if progress is not None:
                progress(step, total, ema)
    model = accelerator.unwrap_model(model).eval()
    restore()
    clf = InputClassifier(model, tokenizer, spec, harmful_categories)
    stats = {
        "train_examples": len(examples),
        "train_windows": len(items),
        "positive_windows": int(n_pos),
        "steps": step,
        "final_loss_ema": round(float(ema or 0.0), 4),
        "seconds": round(time.perf_counter() - t0, 1),
        "prepare_seconds": round(t0 - t_prep, 1),
        "precision": resolve_precision(args.precision),
    }
    return clf, stats
