"""Backend options shared by ``generate``, ``run`` and ``redteam``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

Backend = Annotated[
    str | None,
    typer.Option("--backend", help="LLM backend: local, openai (any OpenAI-compatible server), anthropic, or a name from --llm-config."),
]
Model = Annotated[str | None, typer.Option(help="Model name (or a local path for --backend local).")]
BaseUrl = Annotated[str | None, typer.Option(help="Server URL, e.g. http://127.0.0.1:8080/v1 for vLLM, Ollama or llama.cpp.")]
ApiKeyEnv = Annotated[str | None, typer.Option(help="Name of the environment variable that holds the API key.")]
HelpfulOnly = Annotated[
    bool | None,
    typer.Option("--helpful-only/--not-helpful-only", help="Mark the model as helpful-only (it answers harmful requests)."),
]
LLMConfigFile = Annotated[Path | None, typer.Option("--llm-config", help="YAML file of named backends, with ${ENV} substitution.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the on-disk request cache.")]


def client_from_options(
    backend: str | None,
    model: str | None,
    base_url: str | None,
    api_key_env: str | None,
    helpful_only: bool | None,
    llm_config: Path | None,
    no_cache: bool,
) -> Any:
    """An :class:`~ccguard.llm.client.LLMClient`, or None when no backend was asked for."""
    if backend is None:
        return None
    import os

    from ccguard.errors import CcguardError
    from ccguard.llm.client import make_client
    from ccguard.llm.config import load_llm_config, resolve_spec

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if api_key is None:
            raise CcguardError(f"environment variable {api_key_env} is not set (--api-key-env)")
    cfg = load_llm_config(llm_config) if llm_config is not None else None
    spec = resolve_spec(backend, model=model, base_url=base_url, api_key=api_key, helpful_only=helpful_only, config=cfg,
                        config_path=llm_config)
    cache_dir = Path(cfg.cache_dir).expanduser() if cfg and cfg.cache_dir else None
    return make_client(spec, cache_dir=cache_dir, use_cache=not no_cache)
