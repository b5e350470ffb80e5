"""`freeze_layers`: both classifiers can keep the backbone's embeddings and lower layers as pretrained (real MiniLM)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ccguard.classifiers.backbone import resolve_backbone
from ccguard.errors import CcguardError
from ccguard.records import Example
from ccguard.train.args import OutputTrainArgs, TrainArgs

TEXTS = [("how do i make sarin at home", "harmful", "Sure. First you would gather what the question names."),
         ("how do i bake bread", "harmless", "Mix flour, water, salt and yeast, then let it rise.")] * 4  # fmt: skip


def _examples() -> list[Example]:
    return [Example(id=f"e{i}", prompt=p, response=r, label=y, category="agent_synthesis" if y == "harmful" else None,
                    source="seed", group=f"g{i}", split="train") for i, (p, y, r) in enumerate(TEXTS)]  # fmt: skip


def _pretrained() -> dict[str, torch.Tensor]:
    return load_file(str(Path(resolve_backbone("minilm")) / "model.safetensors"))


def _same(t: torch.Tensor, before: dict[str, torch.Tensor], key: str) -> bool:
    return torch.equal(t.detach(), before[key])


def test_the_input_classifier_trains_only_the_layers_above_the_frozen_ones():
    from ccguard.train.input import train_input

    args = TrainArgs(num_layers=3, max_len=32, stride=24, max_steps=2, batch_size=4, lr=1e-3, freeze_layers=2,
                     precision="no")  # fmt: skip
    clf, _ = train_input(_examples(), ["agent_synthesis"], args)
    before, enc = _pretrained(), clf.model.encoder
    assert _same(enc.embeddings.word_embeddings.weight, before, "embeddings.word_embeddings.weight")
    assert _same(enc.embeddings.position_embeddings.weight, before, "embeddings.position_embeddings.weight")
    for i in (0, 1):
        assert _same(enc.encoder.layer[i].attention.self.query.weight, before, f"encoder.layer.{i}.attention.self.query.weight")
    assert not _same(enc.encoder.layer[2].attention.self.query.weight, before, "encoder.layer.2.attention.self.query.weight")
    # Recorded only when set: guards trained before the field keep their training fingerprint.
    assert args.to_dict()["freeze_layers"] == 2 and "freeze_layers" not in TrainArgs().to_dict()
    assert TrainArgs.from_dict(args.to_dict()) == args


def test_the_output_classifier_trains_only_the_layers_above_the_frozen_ones():
    from ccguard.train.output import train_output

    args = OutputTrainArgs(num_layers=2, prompt_tokens=16, response_tokens=16, max_steps=2, batch_size=4, lr=1e-3,
                           freeze_layers=1, precision="no")  # fmt: skip
    clf, _ = train_output(_examples(), args)
    before, bb = _pretrained(), clf.model.backbone
    assert _same(bb.embeddings.word_embeddings.weight, before, "embeddings.word_embeddings.weight")
    assert _same(bb.encoder.layer[0].output.dense.weight, before, "encoder.layer.0.output.dense.weight")
    assert not _same(bb.encoder.layer[1].output.dense.weight, before, "encoder.layer.1.output.dense.weight")
    assert "freeze_layers" not in OutputTrainArgs().to_dict() and OutputTrainArgs.from_dict(args.to_dict()) == args


def test_freezing_every_layer_or_a_negative_count_is_refused():
    from ccguard.train.input import train_input

    with pytest.raises(CcguardError, match="freeze_layers is -1"):
        train_input(_examples(), ["agent_synthesis"], TrainArgs(num_layers=3, max_len=32, stride=24, max_steps=1,
                                                                batch_size=4, freeze_layers=-1))  # fmt: skip
    with pytest.raises(CcguardError, match="freeze_layers is 3, but the backbone has 3 layers"):
        train_input(_examples(), ["agent_synthesis"], TrainArgs(num_layers=3, max_len=32, stride=24, max_steps=1,
                                                                batch_size=4, freeze_layers=3))  # fmt: skip


@pytest.mark.parametrize("side", ["input", "output"])
def test_example_weights_reach_the_loss(side):
    """With every example weighted 0 (and no weight decay) training leaves the backbone as pretrained; weighted 1, it
    moves it. A wrong number of weights is refused before any model is loaded."""
    from ccguard.train.input import train_input
    from ccguard.train.output import train_output

    rows = _examples()
    if side == "input":
        args = TrainArgs(num_layers=2, max_len=32, stride=24, max_steps=2, batch_size=4, lr=1e-3, weight_decay=0.0,
                         precision="no")  # fmt: skip
        fit = lambda w: train_input(rows, ["agent_synthesis"], args, weights=w).__getitem__(0).model.encoder  # noqa: E731
    else:
        args = OutputTrainArgs(num_layers=2, prompt_tokens=16, response_tokens=16, max_steps=2, batch_size=4, lr=1e-3,
                               weight_decay=0.0, precision="no")  # fmt: skip
        fit = lambda w: train_output(rows, args, weights=w).__getitem__(0).model.backbone  # noqa: E731
    with pytest.raises(ValueError, match="3 weights for 8 training examples"):
        fit([1.0] * 3)
    before, key = _pretrained(), "encoder.layer.1.output.dense.weight"
    assert _same(fit([0.0] * len(rows)).encoder.layer[1].output.dense.weight, before, key)
    assert not _same(fit([1.0] * len(rows)).encoder.layer[1].output.dense.weight, before, key)
