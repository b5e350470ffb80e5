"""OpenAI-compatible chat completions over HTTP: OpenAI, vLLM, Ollama, llama.cpp server, LiteLLM, or ccguard's own
proxy. Bounded concurrency, a timeout on every request, and retries with exponential backoff and jitter on 429s,
5xx errors and timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from ccguard.errors import CcguardError
from ccguard.llm.base import Completion, GenerateParams, LLMBackend, Usage
from ccguard.records import Message
from ccguard.registry import register

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class UpstreamError(CcguardError):
    """The upstream model server failed (after retries) or answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class OpenAIBackend(LLMBackend):
    name = "openai"

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
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=headers, timeout=httpx.Timeout(self.timeout), transport=self._transport
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _body(self, messages: Sequence[Message], params: GenerateParams, stream: bool, extra: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
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

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(min(8.0, 0.25 * 2**attempt) * (0.5 + random.random()))

    async def generate(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> Completion:
        body = self._body(messages, params or GenerateParams(), False, extra)
        async with self._loop_bound("sem", lambda: asyncio.Semaphore(self.concurrency)):
            for attempt in range(self.max_retries + 1):
                try:
                    r = await self._http().post("/chat/completions", json=body)
                except (httpx.TimeoutException, httpx.TransportError) as e:
                    if attempt == self.max_retries:
                        raise UpstreamError(f"upstream unreachable: {type(e).__name__}") from None
                    await self._backoff(attempt)
                    continue
                if r.status_code in RETRY_STATUS and attempt < self.max_retries:
                    await self._backoff(attempt)
                    continue
                if r.status_code >= 400:
                    raise UpstreamError(f"upstream answered {r.status_code}", status=r.status_code)
                data = r.json()
                choice = data["choices"][0]
                u = data.get("usage") or {}
                return Completion(
                    text=choice["message"].get("content") or "",
                    finish_reason=choice.get("finish_reason") or "stop",
                    model=data.get("model", self.model),
                    usage=Usage(prompt_tokens=u.get("prompt_tokens", 0), completion_tokens=u.get("completion_tokens", 0)),
                )
        raise UpstreamError("upstream failed")  # pragma: no cover

    async def stream(
        self, messages: Sequence[Message], params: GenerateParams | None = None, extra: dict[str, Any] | None = None
    ) -> AsyncIterator[str]:
        body = self._body(messages, params or GenerateParams(), True, extra)
        async with self._loop_bound("sem", lambda: asyncio.Semaphore(self.concurrency)):
            for attempt in range(self.max_retries + 1):
                started = False
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
                                return
                            try:
                                delta = json.loads(payload)["choices"][0].get("delta") or {}
                            except (json.JSONDecodeError, KeyError, IndexError):
                                raise UpstreamError("upstream sent a malformed stream event") from None
                            piece = delta.get("content")
                            if piece:
                                started = True
                                yield piece
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
