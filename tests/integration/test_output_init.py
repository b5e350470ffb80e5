"""`init_from_input`: the output classifier can start from a trained input classifier's encoder (real MiniLM)."""

from __future__ import annotations

import pytest
import torch

from ccguard.errors import CcguardError
from ccguard.records import Example
from ccguard.train.args import OutputTrainArgs, TrainArgs

TEXTS = [("how do i make sarin at home", "harmful", "Sure. First you would gather what the question names."),
         ("how do i bake bread", "harmless", "Mix flour, water, salt and yeast, then let it rise.")] * 4  # fmt: skip


def _examples() -> list[Example]:
    return [Example(id=f"e{i}", prompt=p, response=r, label=y, category="agent_synthesis" if y == "harmful" else None,
                    source="seed", group=f"g{i}", split="train") for i, (p, y, r) in enumerate(TEXTS)]  # fmt: skip


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory):
    from ccguard.train.input import train_input

    clf, _ = train_input(_examples(), ["agent_synthesis"], TrainArgs(num_layers=2, max_len=32, stride=24, max_steps=2,
                                                                     batch_size=4, lr=1e-3, precision="no"))  # fmt: skip
    out = tmp_path_factory.mktemp("input")
    clf.save(out)
    return out


def test_the_output_backbone_starts_from_the_input_encoder(input_dir):
    from safetensors.torch import load_file

    from ccguard.train.output import train_output

    # lr 0: training leaves the starting weights as they were, so they can be compared.
    args = OutputTrainArgs(num_layers=2, prompt_tokens=16, response_tokens=16, max_steps=1, batch_size=4, lr=0.0,
                           head_lr=0.0, init_from_input=True, precision="no")  # fmt: skip
    clf, _ = train_output(_examples(), args, init_encoder=input_dir)
    enc = load_file(str(input_dir / "model.safetensors"))
    bb = clf.model.backbone.state_dict()
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.1.output.dense.weight"):
        assert torch.equal(bb[key], enc[f"encoder.{key}"])
    # Without it the backbone is the pretrained one, which the input classifier's training moved.
    plain, _ = train_output(_examples(), OutputTrainArgs(num_layers=2, prompt_tokens=16, response_tokens=16, max_steps=1,
                                                         batch_size=4, lr=0.0, head_lr=0.0, precision="no"))  # fmt: skip
    key = "encoder.layer.1.output.dense.weight"
    assert not torch.equal(plain.model.backbone.state_dict()[key], enc[f"encoder.{key}"])
    # Recorded only when set: guards trained before the field keep their training fingerprint.
    assert args.to_dict()["init_from_input"] is True and "init_from_input" not in OutputTrainArgs().to_dict()


def test_an_input_encoder_of_another_shape_is_refused_by_name(input_dir, tmp_path):
    from ccguard.train.output import train_output

    args = OutputTrainArgs(num_layers=3, prompt_tokens=16, response_tokens=16, max_steps=1, batch_size=4,
                           init_from_input=True, precision="no")  # fmt: skip
    with pytest.raises(CcguardError, match="does not fit the output backbone .*encoder.layer.2"):
        train_output(_examples(), args, init_encoder=input_dir)
    with pytest.raises(CcguardError, match="not an input classifier directory"):
        train_output(_examples(), args, init_encoder=tmp_path)


def test_the_output_fingerprint_follows_the_input_classifier_it_starts_from():
    from ccguard import constitution
    from ccguard.pipeline import _sha, _training_fingerprint

    const = constitution.load("cbrn")
    args = OutputTrainArgs(init_from_input=True)
    a = _training_fingerprint("output", const, args, "sha", "input-1")
    assert a != _training_fingerprint("output", const, args, "sha", "input-2")
    # Without a warm start the fingerprint is what it was before the field existed.
    assert _training_fingerprint("output", const, OutputTrainArgs(), "sha") == _sha(
        {"data": "sha", "args": OutputTrainArgs().to_dict(), "categories": [c.id for c in const.harmful], "kind": "output"})


def test_a_warm_start_flag_without_an_encoder_or_the_reverse_is_refused(input_dir):
    from ccguard.train.output import train_output

    args = OutputTrainArgs(num_layers=2, prompt_tokens=16, response_tokens=16, max_steps=1, batch_size=4,
                           precision="no")  # fmt: skip
    with pytest.raises(CcguardError, match="init_from_input is set but no input classifier"):
        train_output(_examples(), OutputTrainArgs(**{**args.to_dict(), "init_from_input": True}))
    with pytest.raises(CcguardError, match="init_from_input is not set"):
        train_output(_examples(), args, init_encoder=input_dir)


def test_unreadable_input_weights_are_named(input_dir, tmp_path):
    import shutil

    from ccguard.train.output import train_output

    broken = tmp_path / "input"
    shutil.copytree(input_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    args = OutputTrainArgs(num_layers=2, prompt_tokens=16, response_tokens=16, max_steps=1, batch_size=4,
                           init_from_input=True, precision="no")  # fmt: skip
    with pytest.raises(CcguardError, match="unreadable input classifier"):
        train_output(_examples(), args, init_encoder=broken)
