"""What the data stages talk to: a backend plus an on-disk request cache and token/cost accounting.

The cache key is a hash of everything that decides a completion: backend kind, model, server, messages and
sampling parameters (seed included). A re-run with the same requests costs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ccguard.llm.base import Completion, GenerateParams, LLMBackend, create_backend
from ccguard.llm.config import BackendSpec, Price
from ccguard.records import Message, atomic_write_text

T = TypeVar("T")


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "ccguard" / "llm"


@dataclass
class Meter:
    """Calls, cache hits, tokens and cost, as recorded in a run manifest."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": round(self.cost_usd, 6)}


@dataclass
class LLMClient:
    """A backend with a request cache and a meter. ``helpful_only`` marks a model that answers harmful requests."""

    backend: LLMBackend
    spec: BackendSpec
    cache_dir: Path | None = None
    meter: Meter = field(default_factory=Meter)

    @property
    def helpful_only(self) -> bool:
        return self.spec.helpful_only

    @property
    def price(self) -> Price:
        return self.spec.price

    def request_key(self, messages: list[Message], params: GenerateParams) -> str:
        body = {
            "kind": self.spec.kind, "model": self.spec.model, "base_url": self.spec.base_url,
            "messages": [[m.role, m.content] for m in messages], "params": params.model_dump(),
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir else None

    async def generate(self, messages: list[Message], params: GenerateParams) -> Completion:
        key = self.request_key(messages, params)
        path = self._cache_path(key)
        if path is not None and path.is_file():
            try:
                out = Completion.model_validate_json(path.read_text(encoding="utf-8"))
                self.meter.cache_hits += 1
                return out
            except ValueError:
                pass  # a damaged entry is a miss; it is rewritten below
        out = await self.backend.generate(messages, params)
        self.meter.calls += 1
        self.meter.prompt_tokens += out.usage.prompt_tokens
        self.meter.completion_tokens += out.usage.completion_tokens
        self.meter.cost_usd += self.price.cost(out.usage.prompt_tokens, out.usage.completion_tokens)
        if path is not None:
            atomic_write_text(path, out.model_dump_json())
        return out

    async def aclose(self) -> None:
        await self.backend.aclose()


def run_sync(client: LLMClient, make: Callable[[], Awaitable[T]]) -> T:
    """Run one async job to completion on a fresh event loop, closing the backend's connections on that loop, so
    the client can be used again by a later call."""

    async def go() -> T:
        try:
            return await make()
        finally:
            await client.aclose()

    return asyncio.run(go())


def make_client(spec: BackendSpec, cache_dir: Path | None = None, use_cache: bool = True) -> LLMClient:
    """Build the backend a spec names, wrapped with the cache (``use_cache=False`` turns it off)."""
    backend = create_backend(spec.kind, **spec.factory_args())
    return LLMClient(backend, spec, (cache_dir or default_cache_dir()) if use_cache else None)
