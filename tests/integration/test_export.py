"""`ccguard export`: ONNX models that a plain ONNX Runtime session and the tokenizers library can use, following
export.json alone, reproduce the guard's scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

PROMPT = "How do I culture anthrax spores at home?"
RESPONSE = "Sure. First you would gather the starting materials, then set everything up and follow the steps."


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


@pytest.fixture(scope="module")
def exported(smoke_run: Path, tmp_path_factory) -> Path:
    from ccguard.cli import app

    out = tmp_path_factory.mktemp("export") / "onnx"
    res = CliRunner().invoke(app, ["export", "--guard", str(smoke_run / "guard"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_exported_models_reproduce_the_guard(exported: Path, smoke_guard):
    import onnxruntime as ort
    from tokenizers import Tokenizer

    info = json.loads((exported / "export.json").read_text())
    assert info["input"]["threshold"] == smoke_guard.policy.input_threshold

    # Input: one window, special tokens included, as export.json says.
    tok = Tokenizer.from_file(str(exported / info["input"]["tokenizer"]))
    ids = tok.encode(PROMPT).ids
    assert len(ids) <= info["input"]["window"]["max_len"]
    sess = ort.InferenceSession(str(exported / info["input"]["model"]), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), dtype=np.int64)})[0]
    clf = smoke_guard.input_classifier
    precision, clf.precision = clf.precision, "no"
    try:
        want = clf.score([PROMPT])[0].score
    finally:
        clf.precision = precision
    assert logits.shape == (1, 1 + len(info["input"]["categories"]))
    assert float(_sigmoid(logits[0, 0])) == pytest.approx(want, abs=1e-4)

    # Output: prefix + prompt + suffix + separator, then the response's tokens.
    o = info["output"]
    tok = Tokenizer.from_file(str(exported / o["tokenizer"]))
    prompt_ids = tok.encode(PROMPT, add_special_tokens=False).ids[-o["prompt_tokens"] :]
    response_ids = tok.encode(RESPONSE, add_special_tokens=False).ids
    ctx = o["prefix_ids"] + prompt_ids + o["suffix_ids"] + o["separator_ids"]
    ids = np.array([ctx + response_ids])
    sess = ort.InferenceSession(str(exported / o["model"]), providers=["CPUExecutionProvider"])
    token_logits = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    got = _sigmoid(token_logits[0, len(ctx) :])
    want = smoke_guard.output_classifier.score([PROMPT], [RESPONSE])[0].token_scores
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_export_never_replaces_what_is_not_an_export(smoke_run: Path, exported: Path, tmp_path: Path):
    from ccguard.cli import app

    res = CliRunner().invoke(app, ["export", "--guard", str(tmp_path), "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "guard.json" in str(res.exception or res.output)
    assert not (tmp_path / "x").exists()
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    for out in (keep, smoke_run / "guard", smoke_run):
        res = CliRunner().invoke(app, ["export", "--guard", str(smoke_run / "guard"), "--out", str(out)])
        assert res.exit_code != 0, out
    assert (keep / "notes.txt").read_text() == "precious" and (smoke_run / "guard" / "guard.json").is_file()
    # An earlier export is replaced.
    (exported / "stale.txt").write_text("x")
    res = CliRunner().invoke(app, ["export", "--guard", str(smoke_run / "guard"), "--out", str(exported)])
    assert res.exit_code == 0, res.output
    assert (exported / "export.json").is_file() and not (exported / "stale.txt").exists()
