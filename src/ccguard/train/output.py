"""Train the streaming output classifier (token-level value head) on accelerate.

Loss, as in the Constitutional Classifiers paper: binary cross-entropy between the exchange's label and the
prediction at every response prefix, where the prediction moves during training from the value head's direct
probability towards the cumulative maximum over the prefix (``OutputTrainArgs.cummax_weight``). Backbones with an
LM head can add a next-token-prediction term on response tokens, weighted by ``ntp_lambda``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from ccguard.classifiers.backbone import (
    freeze_lower,
    load_tokenizer,
    resolve_backbone,
    resolve_precision,
    torch_setup,
)
from ccguard.classifiers.input import pad_batch
from ccguard.classifiers.output import OutputClassifier, OutputModel, OutputSpec, load_output_backbone
from ccguard.errors import CcguardError
from ccguard.records import Example, render_prompt
from ccguard.synth.responses import substance_start
from ccguard.train.args import OutputTrainArgs
from ccguard.train.dropout import fast_dropout
from ccguard.train.loop import make_accelerator, make_loader, make_optimizer, optimizer_step


@dataclass(frozen=True)
class Exchange:
    ids: list[int]
    start: int  # first response position
    label: float
    weight: float = 1.0  # loss weight (ccguard.train.debias)
    label_start: int | None = None  # first position the loss reads (None: ``start``); after a harmful answer's lead-in


def prefix_loss(values: torch.Tensor, resp_mask: torch.Tensor, y: torch.Tensor, w: float, pos_weight: float,
                example_weight: torch.Tensor | None = None, tokens: torch.Tensor | None = None) -> torch.Tensor:
    """BCE between each sequence label and its per-prefix prediction (direct probability blended with cummax); each
    sequence's terms scaled by its ``example_weight``, the sum divided by ``tokens`` (default: the labelled tokens
    in this batch)."""
    p = torch.sigmoid(values) * resp_mask
    cm = torch.cummax(p, dim=1).values
    pred = ((1.0 - w) * p + w * cm).clamp(1e-6, 1 - 1e-6)
    target = y[:, None].expand_as(pred)
    weight = torch.where(target > 0.5, torch.full_like(pred, pos_weight), torch.ones_like(pred)) * resp_mask
    if example_weight is not None:
        weight = weight * example_weight[:, None]
    loss = F.binary_cross_entropy(pred, target, weight=weight, reduction="sum")
    return loss / (resp_mask.sum() if tokens is None else tokens).clamp(min=1.0)


def ntp_loss(lm: torch.Tensor, ids: torch.Tensor, resp_mask: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy over the labelled response tokens, summed and divided by ``targets`` (default: the
    predicted tokens in this batch). Under N processes pass the mean count over processes, so that the averaged
    gradients are the whole batch's mean rather than a mean of each shard's means."""
    tgt_mask = resp_mask[:, 1:] > 0
    ce = F.cross_entropy(lm[:, :-1][tgt_mask].float(), ids[:, 1:][tgt_mask], reduction="sum")
    return ce / (tgt_mask.sum() if targets is None else targets).clamp(min=1.0)


def to_exchange(clf: OutputClassifier, e: Example, weight: float, response_tokens: int) -> Exchange | None:
    """The training sequence of one exchange: its prompt context, then up to ``response_tokens`` of the answer (None
    when the answer has no tokens). A lead-in (``synth.preambles``) and the wrapper a voice put around the seed text
    (``substance_start``) are read in full before those tokens, and a harmful exchange's loss starts where its
    substance does: an opener, a disclaimer or a persona tag is harmless text, yet no label for it is taught either, so
    the classifier cannot learn that a compliant wrapper after a request means harm (design/026)."""
    ctx = clf.context_ids(render_prompt(e.prompt))
    span = clf.response_tokens(e.response or "")
    at = substance_start(e)
    lead = sum(1 for s in span.starts if s < at)
    # Within the backbone's positions: the context adds special tokens to prompt_tokens (full profile: 4 + 128 + 384 >
    # 512).
    resp = span.ids[: max(0, min(lead + response_tokens, clf.spec.max_positions - len(ctx)))]
    if len(resp) <= lead:
        return None
    harmful = e.label == "harmful"
    return Exchange(ctx + resp, len(ctx), 1.0 if harmful else 0.0, weight, len(ctx) + lead if harmful and lead else None)


def _collate(batch: list[Exchange], pad: int) -> tuple[torch.Tensor, ...]:
    ids, mask = pad_batch([b.ids for b in batch], pad)
    pos = torch.arange(ids.shape[1])[None, :]
    starts = torch.tensor([b.start if b.label_start is None else b.label_start for b in batch])[:, None]
    resp_mask = ((pos >= starts) & (mask > 0)).float()
    return ids, mask, resp_mask, torch.tensor([b.label for b in batch]), torch.tensor([b.weight for b in batch])


def load_input_encoder(backbone: torch.nn.Module, input_dir: Path) -> None:
    """Copy a trained input classifier's encoder weights into ``backbone`` (a causal LM's base model: its tied LM head
    follows the embeddings). Both must be the same architecture; the input classifier's head is not used."""
    from safetensors import SafetensorError

    from ccguard.classifiers.input import InputClassifier

    try:
        encoder = InputClassifier.load(input_dir).model.encoder
    except (SafetensorError, OSError, ValueError) as e:
        raise CcguardError(f"unreadable input classifier: {e}", where=str(input_dir)) from None
    try:
        backbone.base_model.load_state_dict(encoder.state_dict())
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise CcguardError(f"the input classifier's encoder does not fit the output backbone ({detail}); "
                           "init_from_input needs the same backbone and number of layers on both sides",
                           where=str(input_dir)) from None


def train_output(
    train: list[Example], args: OutputTrainArgs, *, progress: Callable[[int, int, float], None] | None = None,
    weights: list[float] | None = None, init_encoder: Path | None = None,
) -> tuple[OutputClassifier, dict[str, float]]:
    """Train a streaming output classifier; returns it and stats. ``weights`` (one per example of ``train``) scale
    each exchange's loss. ``init_encoder`` (an input classifier's directory) replaces the backbone's pretrained
    weights with that classifier's fine-tuned encoder before training."""
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    if weights is not None and len(weights) != len(train):
        raise ValueError(f"{len(weights)} weights for {len(train)} training examples")
    if args.init_from_input != (init_encoder is not None):
        raise CcguardError("init_from_input is set but no input classifier was given to start from" if args.init_from_input
                           else "an input classifier to start from was given, but init_from_input is not set",
                           where="OutputTrainArgs.init_from_input")  # fmt: skip
    t_prep = time.perf_counter()
    torch_setup()
    set_seed(args.seed)
    rng = random.Random(args.seed)
    accelerator, autocast = make_accelerator(args.precision)
    backbone, causal = load_output_backbone(args.backbone, num_layers=args.num_layers)
    if init_encoder is not None:
        load_input_encoder(backbone, Path(init_encoder))
    tokenizer = load_tokenizer(resolve_backbone(args.backbone))
    max_pos = int(getattr(backbone.config, "max_position_embeddings", 512) or 512)
    spec = OutputSpec(prompt_tokens=args.prompt_tokens, chunk_tokens=args.chunk_tokens, max_positions=max_pos,
                      paragraph_windows=args.paragraph_windows)
    model = OutputModel(backbone, causal)
    clf = OutputClassifier(model, tokenizer, spec)

    pairs = [(e, w) for e, w in zip(train, weights or [1.0] * len(train), strict=True) if e.response]
    if args.max_examples is not None and len(pairs) > args.max_examples:
        pairs = rng.sample(pairs, args.max_examples)
    items = [x for e, w in pairs if (x := to_exchange(clf, e, w, args.response_tokens)) is not None]
    n_pos = sum(x.label for x in items)
    pos_weight = (len(items) - n_pos) / max(1.0, n_pos)
    total = args.max_steps or max(1, int(math.ceil(len(items) / args.batch_size) * args.epochs))

    freeze_lower(model.backbone, args.freeze_layers)
    head_ids = {id(p) for p in model.value_head.parameters()}
    opt = make_optimizer(
        [
            {"params": [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad], "lr": args.lr},
            {"params": list(model.value_head.parameters()), "lr": args.head_lr},
        ],
        args.weight_decay, accelerator.device,
    )
    sched = get_linear_schedule_with_warmup(opt, int(total * args.warmup_ratio), total)
    # Cheaper dropout masks on the CPU: the same distribution, a MiniLM step 12-16% shorter (ccguard.train.dropout).
    restore = fast_dropout(model) if accelerator.device.type == "cpu" else (lambda: None)
    model, opt, sched = accelerator.prepare(model, opt, sched)
    loader = make_loader(accelerator, items, [len(x.ids) for x in items], args.batch_size, 16, rng,
                         partial(_collate, pad=tokenizer.pad_token_id), args.seed)
    model.train()
    step, t0, ema = 0, time.perf_counter(), None
    while step < total:
        for ids, mask, resp_mask, y, ew in loader:
            if step >= total:
                break
            with autocast():
                values, lm, _ = model(ids, mask)
            w = args.cummax_weight(step, total)
            tokens = None
            if accelerator.num_processes > 1:
                # Each process holds half the batch, and its labelled tokens differ (a harmful answer's lead-in is not
                # labelled). Dividing by the mean over processes makes the averaged gradients the whole batch's.
                tokens = accelerator.reduce(resp_mask.sum().detach(), reduction="mean")
            loss = prefix_loss(values.float(), resp_mask, y, w, pos_weight, ew, tokens)
            if args.ntp_lambda > 0 and lm is not None:
                targets = None
                if accelerator.num_processes > 1:  # as for ``tokens``: the whole batch's mean, not each shard's
                    targets = accelerator.reduce((resp_mask[:, 1:] > 0).sum().detach().float(), reduction="mean")
                loss = loss + args.ntp_lambda * ntp_loss(lm, ids, resp_mask, targets)
            ema = optimizer_step(accelerator, model, opt, sched, loss, ema)
            step += 1
            if progress is not None:
                progress(step, total, ema)
    model = accelerator.unwrap_model(model).eval()
    restore()
    stats = {
        "train_examples": len(items),
        "positive_examples": int(n_pos),
        "steps": step,
        "final_loss_ema": round(float(ema or 0.0), 4),
        "seconds": round(time.perf_counter() - t0, 1),
        "prepare_seconds": round(t0 - t_prep, 1),
        "precision": resolve_precision(args.precision),
        "causal_lm": causal,
    }
    return OutputClassifier(model, tokenizer, spec), stats
