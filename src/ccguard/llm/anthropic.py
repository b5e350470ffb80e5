"""Anthropic Messages API backend (HTTP, streaming), with the same retries and limits as the OpenAI one."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from ccguard.llm.base import Completion, GenerateParams, StreamEnd, Usage
from ccguard.llm.http import HTTPBackend, UpstreamError
from ccguard.records import Message
from ccguard.registry import register

# Anthropic's stop reasons in OpenAI's terms.
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}

API_VERSION = "2023-06-01"


class AnthropicBackend(HTTPBackend):
    name = "anthropic"
    service = "Anthropic API"

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        base_url: str = "https://api.anthropic.com",
        timeout: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY", "")
        super().__init__(model, base_url, key, timeout, max_retries, concurrency, transport)

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key or "", "anthropic-version": API_VERSION, "content-type": "application/json"}

    def _body(self, messages: Sequence[Message], params: GenerateParams, stream: bool) -> dict[str, Any]:
        system = "\n".join(m.content for m in messages if m.role == "system")
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "temperature": min(params.temperature, 1.0),
            "messages": [{"role": m.role, "content": m.content} for m in messages if m.role != "system"],
            "stream": stream,
        }
        if params.top_p < 1.0:
            body["top_p"] = params.top_p
        if system:
            body["system"] = system
        if params.stop:
            body["stop_sequences"] = params.stop
        return body

    async def generate(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> Completion:
        async with self._slot():
            r = await self._post("/v1/messages", self._body(messages, params or GenerateParams(), False))
        data = r.json()
        text = "".join(b.get("text", "") for b in data.get("content", []) if b.get("type") == "text")
        u = data.get("usage") or {}
        stop = _FINISH.get(data.get("stop_reason"), "stop")
        return Completion(text=text, finish_reason=stop, model=data.get("model", self.model),
                          usage=Usage(prompt_tokens=u.get("input_tokens", 0), completion_tokens=u.get("output_tokens", 0)))

    async def stream(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> AsyncIterator[str]:
        body = self._body(messages, params or GenerateParams(), True)
        finish = "stop"
        async with self._slot(), self._events("/v1/messages", body) as events:
            async for sse in events:
                try:
                    ev = json.loads(sse.data or "{}")
                except json.JSONDecodeError:
                    raise UpstreamError("Anthropic API sent a malformed stream event") from None
                kind = ev.get("type", sse.event)
                if kind == "content_block_delta" and ev.get("delta", {}).get("type") == "text_delta":
                    yield ev["delta"]["text"]
                elif kind == "message_delta":
                    finish = _FINISH.get((ev.get("delta") or {}).get("stop_reason"), finish)
                elif kind == "error":
                    raise UpstreamError(f"Anthropic stream error: {ev.get('error', {}).get('message', '')}")
                elif kind == "message_stop":
                    break
        yield StreamEnd(finish)


@register("backend", "anthropic")
def anthropic(model: str, api_key: str | None = None, base_url: str = "https://api.anthropic.com", timeout: float = 60.0,
              max_retries: int = 4, concurrency: int = 8) -> AnthropicBackend:
    """The Anthropic Messages API (key from ANTHROPIC_API_KEY unless given)."""
    return AnthropicBackend(model, api_key, base_url, timeout, max_retries, concurrency)
