"""Export a guard's classifiers to ONNX, so that standard servers (ONNX Runtime, Triton, Optimum) can load them.

``ccguard export --guard DIR --out DIR`` writes::

    input/model.onnx    input_ids, attention_mask [batch, tokens] -> logits [batch, 1 + categories]
    output/model.onnx   input_ids, attention_mask [batch, tokens] -> token_logits [batch, tokens] (causal)
    */tokenizer.json    the tokenizer each model reads
    export.json         how to turn text into inputs and logits into decisions (thresholds included)
    README.md           the same, for people

Both graphs are full precision and exported with eager attention (plain MatMul/Softmax with an additive mask; the
output model's causal mask is checked, see below). Each export is verified before it is written: the ONNX model must
reproduce the torch model to 1e-3 logits at lengths it was not traced at, and the output model's logits for a token
must not change when a later token does.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccguard.errors import CcguardError
from ccguard.records import atomic_write_text

TOLERANCE = 1e-3
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def export_onnx(module: Any, path: Path, *, output: str, per_token: bool, opset: int = 17) -> None:
    """Trace ``module(input_ids, attention_mask)`` to ONNX with dynamic batch and length axes."""
    ids = torch.randint(1000, 2000, (2, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (ids, torch.ones_like(ids)), str(path), input_names=["input_ids", "attention_mask"],
            output_names=[output],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                          output: {0: "batch", 1: "tokens"} if per_token else {0: "batch"}},
            opset_version=opset, dynamo=False,
        )


class _TokenLogits(torch.nn.Module):
    """The output model as ``(ids, mask) -> per-token value logits``, for tracing."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        return self.model(input_ids, attention_mask)[0]


def _eager(model: Any, attr: str) -> Any:
    """A copy of ``model`` whose backbone (``attr``) uses eager attention, the form ONNX exports faithfully."""
    m = copy.deepcopy(model).float().eval()
    getattr(m, attr).set_attn_implementation("eager")
    return m


def _check(session: Any, reference: Any, *, causal: bool, vocab: int) -> float:
    """The largest logit difference between ONNX and torch on fresh inputs; raises if the causal mask leaks."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for length in (7, 61, 203):
        ids = torch.tensor(rng.integers(1000, min(vocab, 20000), (2, length)))
        mask = torch.ones_like(ids)
        mask[1, length - 3 :] = 0  # a padded row too
        got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        with torch.inference_mode():
            want = reference(ids, mask).numpy()
        keep = mask.numpy().astype(bool) if causal else np.ones(want.shape, bool)
        worst = max(worst, float(np.abs(got - want)[keep].max()))
        if causal:
            ids2 = ids.clone()
            ids2[:, -1] = 1999 if int(ids[0, -1]) != 1999 else 1998
            got2 = session.run(None, {"input_ids": ids2.numpy(), "attention_mask": mask.numpy()})[0]
            if np.abs(got2[0, :-1] - got[0, :-1]).max() > 1e-6:
                raise CcguardError("the exported output model sees future tokens; not written")
    if worst > TOLERANCE:
        raise CcguardError(f"the exported model differs from the torch model by {worst:.2g} logits; not written")
    return worst


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def export_guard(guard_dir: str | Path, out_dir: str | Path, *, opset: int = 17) -> dict[str, Any]:
    """Export both classifiers of a guard to ``out_dir`` (written complete or not at all); returns export.json."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise CcguardError("ccguard export needs onnxruntime: pip install 'ccguard-classifiers[fast]'") from None
    from ccguard.guard import Guard, read_manifest

    guard_dir, out_dir = Path(guard_dir).resolve(), Path(out_dir).resolve()
    read_manifest(guard_dir)  # a clear error for something that is not a guard, before anything else
    if out_dir == guard_dir or guard_dir.is_relative_to(out_dir) or out_dir.is_relative_to(guard_dir):
        raise CcguardError("must not be the guard directory, inside it, or around it", where=f"--out {out_dir}")
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "export.json").is_file())):
        raise CcguardError("exists and is not an earlier ccguard export: choose a new directory", where=f"--out {out_dir}")
    g = Guard.load(guard_dir)
    m = g.manifest
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    old: Path | None = None
    try:
        info: dict[str, Any] = {"format": "ccguard-onnx/1", "constitution": m.constitution, "opset": opset}
        inp = g.input_classifier
        (tmp / "input").mkdir()
        model = _eager(inp.model, "encoder")
        export_onnx(model, tmp / "input" / "model.onnx", output="logits", per_token=False, opset=opset)
        err = _check(ort.InferenceSession(str(tmp / "input" / "model.onnx"), providers=["CPUExecutionProvider"]), model,
                     causal=False, vocab=model.encoder.config.vocab_size)
        _copy_tokenizer(guard_dir / m.input.path, tmp / "input")
        spec = inp.spec
        info["input"] = {
            "model": "input/model.onnx", "tokenizer": "input/tokenizer.json", "max_err_vs_torch": err,
            "threshold": g.policy.input_threshold, "categories": list(inp.categories),
            "window": {"max_len": spec.max_len, "stride": spec.stride, "strategy": spec.strategy},
            "score": "sigmoid(logits[:, 0]) per window of at most max_len tokens (special tokens included); a prompt's "
                     "score is the maximum over its windows, and ccguard also scores decoded views of encoded text, "
                     "which a plain server does not. Blocked when score > threshold. logits[:, 1:] rank categories.",
        }
        if g.output_classifier is not None:
            out = g.output_classifier
            (tmp / "output").mkdir()
            model = _TokenLogits(_eager(out.model, "backbone")).eval()
            export_onnx(model, tmp / "output" / "model.onnx", output="token_logits", per_token=True, opset=opset)
            err = _check(ort.InferenceSession(str(tmp / "output" / "model.onnx"), providers=["CPUExecutionProvider"]), model,
                         causal=True, vocab=out.model.backbone.config.vocab_size)
            _copy_tokenizer(guard_dir / m.output.path, tmp / "output")
            prefix, suffix, sep = (list(x) for x in (out._prefix, out._suffix, out._sep))
            info["output"] = {
                "model": "output/model.onnx", "tokenizer": "output/tokenizer.json", "max_err_vs_torch": err,
                "threshold": g.policy.output_threshold, "prompt_tokens": out.spec.prompt_tokens,
                "chunk_tokens": out.spec.chunk_tokens, "prefix_ids": prefix, "suffix_ids": suffix, "separator_ids": sep,
                "score": "input_ids = prefix_ids + the last prompt_tokens tokens of the prompt (no special tokens) + "
                         "suffix_ids + separator_ids, then the response's tokens (no special tokens). "
                         "sigmoid(token_logits) at each response token scores the response up to that token. Streaming "
                         "halts at the first chunk of chunk_tokens response tokens whose highest score > threshold; "
                         "nothing from that chunk on is released."
                         + (" paragraph_windows: each paragraph after the first (a blank line before its first token) "
                            "is also scored alone, as input_ids = the same context, then only that paragraph's tokens; "
                            "a token's score is the higher of its two." if out.spec.paragraph_windows else ""),
                "paragraph_windows": out.spec.paragraph_windows,
            }
        atomic_write_text(tmp / "export.json", json.dumps(info, indent=2))
        atomic_write_text(tmp / "README.md", _readme(info))
        tmp.chmod(0o755)  # mkdtemp makes it private; an export is meant to be shared
        if out_dir.exists():  # an earlier export (checked above): moved aside, replaced, then deleted
            old = out_dir.with_name(f".{out_dir.name}.old-{tmp.name[-8:]}")
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out_dir.exists():
            old.rename(out_dir)  # interrupted between the renames: the earlier export comes back
        raise
    return info


def _readme(info: dict[str, Any]) -> str:
    lines = ["# ccguard guard, exported to ONNX", "",
             f"Constitution `{info['constitution'].get('name')}` (sha256 `{info['constitution'].get('hash')}`).", ""]
    for side in ("input", "output"):
        if side in info:
            s = info[side]
            lines += [f"## {side} classifier", "", f"- model: `{s['model']}`, tokenizer: `{s['tokenizer']}`",
                      f"- threshold: {s['threshold']}", f"- {s['score']}", ""]
    lines += ["Verified against the torch model before writing (`max_err_vs_torch` in export.json).", ""]
    return "\n".join(lines)
