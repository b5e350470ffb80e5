"""What the HTTP backends share: one pooled client per backend, bounded concurrency, a timeout on every request,
and retries with exponential backoff and jitter on 429s, 5xx errors and timeouts."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from ccguard.errors import CcguardError
from ccguard.llm.base import LLMBackend

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}


class UpstreamError(CcguardError):
    """The upstream model server failed (after retries) or answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class HTTPBackend(LLMBackend):
    """Base for backends that speak HTTP. Subclasses set ``service`` and implement :meth:`_headers`."""

    service = "upstream"

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str | None,
        timeout: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=self._headers(), timeout=httpx.Timeout(self.timeout), transport=self._transport
            )
        return self._client

    def _slot(self) -> asyncio.Semaphore:
        """The concurrency bound (one semaphore per event loop)."""
        return self._loop_bound("sem", lambda: asyncio.Semaphore(self.concurrency))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(min(8.0, 0.25 * 2**attempt) * (0.5 + random.random()))

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST with retries; a final error status or an unreachable server is an :class:`UpstreamError`."""
        for attempt in range(self.max_retries + 1):
            try:
                r = await self._http().post(path, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                if attempt == self.max_retries:
                    raise UpstreamError(f"{self.service} unreachable: {type(e).__name__}") from None
            else:
                if r.status_code not in RETRY_STATUS or attempt == self.max_retries:
                    if r.status_code >= 400:
                        raise UpstreamError(f"{self.service} answered {r.status_code}", status=r.status_code)
                    return r
            await self._backoff(attempt)
        raise UpstreamError(f"{self.service} failed")  # pragma: no cover
