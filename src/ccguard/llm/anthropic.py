"""Anthropic Messages API backend (HTTP, streaming), with the same retries and limits as the OpenAI one."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from ccguard.llm.base import Completion, GenerateParams, LLMBackend, Usage
from ccguard.llm.openai_compat import RETRY_STATUS, UpstreamError
from ccguard.records import Message
from ccguard.registry import register

API_VERSION = "2023-06-01"


class AnthropicBackend(LLMBackend):
    name = "anthropic"

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
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY", "")
        self.base_url = base_url.rstrip("/")
        self.timeout, self.max_retries = timeout, max_retries
        self.concurrency = concurrency
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"x-api-key": self.api_key, "anthropic-version": API_VERSION, "content-type": "application/json"}
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.timeout, transport=self._transport)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

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

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            try:
                r = await self._http().post("/v1/messages", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                if attempt == self.max_retries:
                    raise UpstreamError(f"Anthropic API unreachable: {type(e).__name__}") from None
            else:
                if r.status_code not in RETRY_STATUS and r.status_code != 529 or attempt == self.max_retries:
                    if r.status_code >= 400:
                        raise UpstreamError(f"Anthropic API answered {r.status_code}", status=r.status_code)
                    return r
            await asyncio.sleep(min(8.0, 0.25 * 2**attempt) * (0.5 + random.random()))
        raise UpstreamError("Anthropic API failed")  # pragma: no cover

    async def generate(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> Completion:
        async with self._loop_bound("sem", lambda: asyncio.Semaphore(self.concurrency)):
            r = await self._post(self._body(messages, params or GenerateParams(), False))
        data = r.json()
        text = "".join(b.get("text", "") for b in data.get("content", []) if b.get("type") == "text")
        u = data.get("usage") or {}
        stop = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}.get(data.get("stop_reason"), "stop")
        return Completion(text=text, finish_reason=stop, model=data.get("model", self.model),
                          usage=Usage(prompt_tokens=u.get("input_tokens", 0), completion_tokens=u.get("output_tokens", 0)))

    async def stream(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> AsyncIterator[str]:
        body = self._body(messages, params or GenerateParams(), True)
        async with self._loop_bound("sem", lambda: asyncio.Semaphore(self.concurrency)), self._http().stream("POST", "/v1/messages", json=body) as r:
            if r.status_code >= 400:
                raise UpstreamError(f"Anthropic API answered {r.status_code}", status=r.status_code)
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                ev = json.loads(line[5:].strip() or "{}")
                if ev.get("type") == "content_block_delta" and ev.get("delta", {}).get("type") == "text_delta":
                    yield ev["delta"]["text"]
                elif ev.get("type") == "error":
                    raise UpstreamError(f"Anthropic stream error: {ev.get('error', {}).get('message', '')}")
                elif ev.get("type") == "message_stop":
                    return


@register("backend", "anthropic")
def anthropic(model: str, api_key: str | None = None, base_url: str = "https://api.anthropic.com", timeout: float = 60.0,
              max_retries: int = 4, concurrency: int = 8) -> AnthropicBackend:
    """The Anthropic Messages API (key from ANTHROPIC_API_KEY unless given)."""
    return AnthropicBackend(model, api_key, base_url, timeout, max_retries, concurrency)
