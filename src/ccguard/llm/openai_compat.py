"""OpenAI-compatible chat completions over HTTP: OpenAI, vLLM, Ollama, llama.cpp server, LiteLLM, or ccguard's own
proxy. Bounded concurrency, a timeout on every request, and retries on 429s, 5xx errors and timeouts that honour
``Retry-After`` (see ``ccguard.llm.http``)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from ccguard.llm.base import Completion, GenerateParams, StreamEnd, ToolCallDelta, Usage
from ccguard.llm.http import HTTPBackend, UpstreamError
from ccguard.records import Message
from ccguard.registry import register

__all__ = ["OpenAIBackend", "UpstreamError"]


def _wire(m: Message) -> dict[str, Any]:
    """A message as the chat-completions API takes it, tool calls and tool results included."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = m.tool_calls
        out["content"] = m.content or None
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


class OpenAIBackend(HTTPBackend):
    name = "openai"
    service = "upstream"

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        super().__init__(model, base_url, key, timeout, max_retries, concurrency, transport)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _body(self, messages: Sequence[Message], params: GenerateParams, stream: bool, extra: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [_wire(m) for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": stream,
        }
        if params.stop:
            body["stop"] = params.stop
        if params.seed is not None:
            body["seed"] = params.seed
        body.update(extra or {})
        return body

    async def generate(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> Completion:
        body = self._body(messages, params or GenerateParams(), False, extra)
        async with self._slot():
            r = await self._post("/chat/completions", body)
        data = r.json()
        choice = data["choices"][0]
        u = data.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason") or "stop",
            model=data.get("model", self.model),
            usage=Usage(prompt_tokens=u.get("prompt_tokens", 0), completion_tokens=u.get("completion_tokens", 0)),
            tool_calls=choice["message"].get("tool_calls") or None,
        )

    async def stream(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> AsyncIterator[str]:
        body = self._body(messages, params or GenerateParams(), True, extra)
        finish = "stop"
        async with self._slot(), self._events("/chat/completions", body) as events:
            async for ev in events:
                if ev.data.strip() == "[DONE]":
                    break
                try:
                    choice = json.loads(ev.data)["choices"][0]
                    delta = choice.get("delta") or {}
                except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                    raise UpstreamError("upstream sent a malformed stream event") from None
                finish = choice.get("finish_reason") or finish
                if piece := delta.get("content"):
                    yield piece
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, dict):
                        yield ToolCallDelta(call)
        yield StreamEnd(finish)


@register("backend", "openai")
def openai(
    model: str, base_url: str = "https://api.openai.com/v1", api_key: str | None = None, timeout: float = 60.0,
    max_retries: int = 4, concurrency: int = 8,
) -> OpenAIBackend:
    """Any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM, ccguard serve)."""
    return OpenAIBackend(model, base_url, api_key, timeout, max_retries, concurrency)
