"""Backend configuration: a YAML file of named backends, with ``${ENV}`` substitution for keys.

```yaml
backends:
  writer:                       # a name to pass as --backend
    kind: openai                # local | openai | anthropic (any registered backend)
    model: gpt-4o-mini
    base_url: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY}  # ${VAR} or ${VAR:-default}; an unset VAR without a default is an error
    helpful_only: false         # true only for a model that answers harmful requests (harmful-style responses)
    price: {prompt_per_mtok: 0.15, completion_per_mtok: 0.60}
cache_dir: ~/.cache/ccguard/llm
```
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ccguard.errors import CcguardError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Price(BaseModel):
    """US dollars per million tokens, for the cost line of a run manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt_per_mtok: float = Field(default=0.0, ge=0, description="Price of a million prompt tokens.")
    completion_per_mtok: float = Field(default=0.0, ge=0, description="Price of a million generated tokens.")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_mtok + completion_tokens * self.completion_per_mtok) / 1e6


class BackendSpec(BaseModel):
    """One configured backend. Everything but ``kind``, ``helpful_only`` and ``price`` goes to the factory."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str = Field(description="Registered backend: local, openai or anthropic.")
    model: str = Field(description="Model name, or a path for the local backend.")
    base_url: str | None = Field(default=None, description="Server URL (OpenAI-compatible or Anthropic).")
    api_key: str | None = Field(default=None, description="API key; use ${ENV} rather than writing it here.")
    timeout: float | None = Field(default=None, gt=0, description="Seconds per request.")
    max_retries: int | None = Field(default=None, ge=0, le=20, description="Retries on 429, 5xx and timeouts.")
    concurrency: int | None = Field(default=None, ge=1, le=256, description="Requests in flight at once.")
    helpful_only: bool = Field(default=False, description="The model answers harmful requests (needed for harmful-style responses).")
    price: Price = Field(default_factory=Price, description="Token prices for cost accounting.")

    def factory_args(self) -> dict[str, Any]:
        if self.kind == "local":
            return {"model": self.model}  # a local model has no server, key, timeout or concurrency
        return self.model_dump(exclude={"kind", "helpful_only", "price"}, exclude_none=True)

    def public(self) -> dict[str, Any]:
        """What a manifest may record: never the key."""
        return self.model_dump(exclude={"api_key"}, exclude_none=True)


class LLMConfig(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backends: dict[str, BackendSpec] = Field(default_factory=dict, description="Named backends.")
    cache_dir: str | None = Field(default=None, description="On-disk request cache (default ~/.cache/ccguard/llm).")


def substitute_env(value: Any, where: str) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree."""
    if isinstance(value, dict):
        return {k: substitute_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        got = os.environ.get(name)
        if got is None:
            if default is None:
                raise CcguardError(f"environment variable {name} is not set (used by {where})")
            return default
        return got

    return _ENV.sub(repl, value)


def load_llm_config(path: Path) -> LLMConfig:
    """Read and validate a backend configuration file; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise CcguardError("file not found", where=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise CcguardError(f"invalid YAML: {getattr(e, 'problem', e)}", where=where) from None
    if not isinstance(raw, dict):
        raise CcguardError("the file must be a mapping with a 'backends' key", where=str(path))
    try:
        raw = substitute_env(raw, "")
    except CcguardError as e:
        raise CcguardError(str(e), where=str(path)) from None
    try:
        return LLMConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "(file)"
        raise CcguardError(f"field {field!r}: {err['msg']}", where=str(path)) from None


def resolve_spec(
    backend: str,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    helpful_only: bool | None = None,
    config: LLMConfig | None = None,
    config_path: Path | None = None,
) -> BackendSpec:
    """``backend`` names an entry of ``config`` or a backend kind; command-line values override the file."""
    spec: dict[str, Any]
    if config is not None and backend in config.backends:
        spec = config.backends[backend].model_dump()
    elif config is not None and backend not in ("local", "openai", "anthropic"):
        raise CcguardError(f"no backend {backend!r} in the configuration (has: {', '.join(config.backends) or 'none'})",
                           where=str(config_path) if config_path else None)
    else:
        spec = {"kind": backend, "model": model or ("smollm2" if backend == "local" else "")}
    for key, val in (("model", model), ("base_url", base_url), ("api_key", api_key), ("helpful_only", helpful_only)):
        if val is not None:
            spec[key] = val
    if not spec.get("model"):
        raise CcguardError(f"backend {backend!r} needs a model (--model)")
    try:
        return BackendSpec.model_validate(spec)
    except ValidationError as e:
        err = e.errors()[0]
        raise CcguardError(f"backend {backend!r}: field {'.'.join(map(str, err['loc']))!r}: {err['msg']}") from None
