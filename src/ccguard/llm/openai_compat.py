"""OpenAI-compatible chat completions over HTTP: OpenAI, vLLM, Ollama, llama.cpp server, LiteLLM, or ccguard's own
proxy. Bounded concurrency, a timeout on every request, and retries with exponential backoff and jitter on 429s,
5xx errors and timeouts."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from ccguard.llm.base import Completion, GenerateParams, StreamEnd, ToolCallDelta, Usage
from ccguard.llm.http import RETRY_STATUS, HTTPBackend, UpstreamError
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
        async with self._slot():
            for attempt in range(self.max_retries + 1):
                started, finish = False, "stop"
                try:
                    async with self._http().stream("POST", "/chat/completions", json=body) as r:
                        if r.status_code in RETRY_STATUS and attempt < self.max_retries:
                            await self._backoff(attempt)
                            continue
                        if r.status_code >= 400:
                            raise UpstreamError(f"upstream answered {r.status_code}", status=r.status_code)
                        async for line in r.aiter_lines():
                            if not line.startswith("data:"):
                                continue
                            payload = line[5:].strip()
                            if payload == "[DONE]":
                                break
                            try:
                                choice = json.loads(payload)["choices"][0]
                                delta = choice.get("delta") or {}
                            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                                raise UpstreamError("upstream sent a malformed stream event") from None
                            finish = choice.get("finish_reason") or finish
                            piece = delta.get("content")
                            if piece:
                                started = True
                                yield piece
                            for call in delta.get("tool_calls") or ():
                                if isinstance(call, dict):
                                    started = True
                                    yield ToolCallDelta(call)
                        yield StreamEnd(finish)
                        return
                except (httpx.TimeoutException, httpx.TransportError) as e:
                    # Once text has been yielded a retry would repeat it: fail instead.
                    if started or attempt == self.max_retries:
                        raise UpstreamError(f"upstream stream failed: {type(e).__name__}") from None
                    await self._backoff(attempt)


@register("backend", "openai")
def openai(
    model: str, base_url: str = "https://api.openai.com/v1", api_key: str | None = None, timeout: float = 60.0,
    max_retries: int = 4, concurrency: int = 8,
) -> OpenAIBackend:
    """Any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM, ccguard serve)."""
    return OpenAIBackend(model, base_url, api_key, timeout, max_retries, concurrency)
