"""The backend protocol. Backends are registered factories (kind ``backend``); their arguments are recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ccguard.records import Message
from ccguard.registry import REGISTRY


class GenerateParams(BaseModel):
    """Sampling parameters common to every backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_tokens: int = Field(default=256, ge=1, le=32768, description="Most tokens to generate.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    stop: list[str] | None = Field(default=None, description="Stop sequences.")
    seed: int | None = Field(default=None, description="Sampling seed, where the backend supports one.")


class Usage(BaseModel):
    """Token accounting for one call."""

    model_config = ConfigDict(frozen=True)
    prompt_tokens: int = Field(default=0, description="Tokens in the prompt.")
    completion_tokens: int = Field(default=0, description="Tokens generated.")


class Completion(BaseModel):
    """A finished generation."""

    model_config = ConfigDict(frozen=True)
    text: str = Field(description="Generated text.")
    finish_reason: str = Field(default="stop", description="'stop', 'length', ...")
    model: str = Field(default="", description="Model that produced it.")
    usage: Usage = Field(default_factory=Usage, description="Token counts.")
    tool_calls: list[dict[str, Any]] | None = Field(default=None, description="Tool calls the model made (OpenAI shape).")


class StreamEnd(str):
    """The last item a backend's stream yields when it knows why generation ended: empty text carrying the finish
    reason ('stop', 'length', ...). Being an empty ``str``, it leaves joined text unchanged."""

    reason: str

    def __new__(cls, reason: str) -> StreamEnd:
        end = super().__new__(cls, "")
        end.reason = reason
        return end


class ProbeLogits(str):
    """A local backend with a probe attached yields these between text pieces: the probe logits of the tokens
    generated since the last one (see ``ccguard.probes``). Empty text, so joined text is unchanged."""

    values: list[float]

    def __new__(cls, values: list[float]) -> ProbeLogits:
        item = super().__new__(cls, "")
        item.values = values
        return item


class ToolCallDelta(str):
    """A streamed fragment of a tool call in OpenAI's delta shape (``index``, and ``id``, ``type`` and
    ``function.name`` on the first fragment, then ``function.arguments`` pieces). Being an empty ``str``, it leaves
    joined text unchanged."""

    delta: dict[str, Any]

    def __new__(cls, delta: dict[str, Any]) -> ToolCallDelta:
        out = super().__new__(cls, "")
        out.delta = delta
        return out


class LLMBackend:
    """Base class: subclasses implement the async core; the sync methods are wrappers over it."""

    name: str = "base"
    model: str = ""

    async def generate(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> Completion:
        parts = [c async for c in self.stream(messages, params, extra)]
        ends = [c.reason for c in parts if isinstance(c, StreamEnd)]
        return Completion(text="".join(parts), model=self.model, finish_reason=ends[-1] if ends else "stop")

    def stream(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> AsyncIterator[str]:
        """Yield generated text pieces, then a :class:`StreamEnd` with the finish reason where the backend knows it.
        ``extra`` carries provider-specific parameters through."""
        raise NotImplementedError

    async def aclose(self) -> None:
        return None

    def _loop_bound(self, name: str, factory: Any) -> Any:
        # asyncio primitives belong to one event loop; the sync wrappers run a fresh loop per call.
        loop = asyncio.get_running_loop()
        key = f"_{name}_by_loop"
        held = getattr(self, key, None)
        if held is None or held[0] is not loop:
            held = (loop, factory())
            setattr(self, key, held)
        return held[1]

    def generate_sync(self, messages: Sequence[Message], params: GenerateParams | None = None) -> Completion:
        async def go() -> Completion:
            try:
                return await self.generate(messages, params)
            finally:
                await self.aclose()

        return asyncio.run(go())

    def stream_sync(self, messages: Sequence[Message], params: GenerateParams | None = None) -> Iterator[str]:
        async def collect() -> list[str]:
            try:
                return [c async for c in self.stream(messages, params)]
            finally:
                await self.aclose()

        yield from asyncio.run(collect())


def create_backend(name: str, **args: Any) -> LLMBackend:
    """Build a registered backend: ``local``, ``openai`` (any OpenAI-compatible server) or ``anthropic``."""
    return REGISTRY.create("backend", name, **args)


def as_messages(messages: Sequence[Message | dict[str, Any]]) -> list[Message]:
    return [m if isinstance(m, Message) else Message.model_validate(m) for m in messages]
