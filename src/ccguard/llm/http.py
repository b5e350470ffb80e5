"""What the HTTP backends share: one pooled client per backend, bounded concurrency, a timeout on every request,
retries (tenacity) on 429s, 5xx errors and timeouts that honour the server's ``Retry-After`` and otherwise back off
exponentially with jitter, and Server-Sent Events read with httpx-sse."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from ccguard.errors import CcguardError
from ccguard.llm.base import LLMBackend

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
MAX_RETRY_AFTER = 60.0  # a server asking for a longer pause gets this much; the request's own timeout still applies
_JITTER = wait_random_exponential(multiplier=0.25, max=8.0)


class UpstreamError(CcguardError):
    """The upstream model server failed (after retries) or answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class _Retry(Exception):
    """An answer worth retrying: its status and the pause the server asked for, if any."""

    def __init__(self, status: int | None, retry_after: float | None = None, error: str = "") -> None:
        self.status, self.retry_after, self.error = status, retry_after, error
        super().__init__(error or f"status {status}")


def retry_after(headers: httpx.Headers) -> float | None:
    """The pause a ``Retry-After`` (or ``retry-after-ms``) header asks for, in seconds, bounded; None without one."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return min(MAX_RETRY_AFTER, max(0.0, float(ms) / 1000))
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value)))
    except ValueError:
        pass
    try:  # an HTTP date; one without a zone ('-0000') is UTC
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None  # unreadable: back off as if there were no header
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return min(MAX_RETRY_AFTER, max(0.0, when.timestamp() - time.time()))


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    if isinstance(exc, _Retry) and exc.retry_after is not None:
        return exc.retry_after
    return _JITTER(state)


def check_status(r: httpx.Response) -> None:
    """Raise ``_Retry`` for a status worth retrying (with its Retry-After)."""
    if r.status_code in RETRY_STATUS:
        raise _Retry(r.status_code, retry_after(r.headers))


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
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # how retries wait (a test can record it)

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

    def retrying(self) -> AsyncRetrying:
        """The retry policy: up to ``max_retries`` more attempts on a retryable status or a timeout or connection
        error, waiting what ``Retry-After`` asks (at most a minute) or else exponential backoff with jitter."""
        return AsyncRetrying(
            retry=retry_if_exception_type((_Retry, httpx.TimeoutException, httpx.TransportError)),
            stop=stop_after_attempt(self.max_retries + 1), wait=_wait, sleep=self.sleep, reraise=True,
        )

    def _failed(self, e: Exception) -> UpstreamError:
        if isinstance(e, _Retry):
            return UpstreamError(e.error or f"{self.service} answered {e.status}", status=e.status)
        return UpstreamError(f"{self.service} unreachable: {type(e).__name__}")

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST with retries; a final error status or an unreachable server is an :class:`UpstreamError`."""
        try:
            async for attempt in self.retrying():
                with attempt:
                    r = await self._http().post(path, json=body)
                    check_status(r)
        except (_Retry, httpx.TimeoutException, httpx.TransportError) as e:
            raise self._failed(e) from None
        if r.status_code >= 400:
            raise UpstreamError(f"{self.service} answered {r.status_code}", status=r.status_code)
        return r

    @asynccontextmanager
    async def _events(self, path: str, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        """POST and open the answer as a stream of Server-Sent Events, retrying (as :meth:`_post`) until the server
        answers with a stream; errors after that are not retried, since text may already have gone out."""
        try:
            async for attempt in self.retrying():
                with attempt:
                    cm = self._http().stream("POST", path, json=body)
                    r = await cm.__aenter__()
                    try:
                        check_status(r)
                    except BaseException:
                        await cm.__aexit__(*sys.exc_info())
                        raise
        except (_Retry, httpx.TimeoutException, httpx.TransportError) as e:
            raise self._failed(e) from None
        try:
            if r.status_code >= 400:
                raise UpstreamError(f"{self.service} answered {r.status_code}", status=r.status_code)
            yield _sse(EventSource(r), self.service)
        finally:
            await cm.__aexit__(None, None, None)


async def _sse(source: EventSource, service: str) -> AsyncIterator[ServerSentEvent]:
    try:
        async for event in source.aiter_sse():
            yield event
    except SSEError as e:
        raise UpstreamError(f"{service} did not answer with an event stream ({e})") from None
    except (httpx.TimeoutException, httpx.TransportError) as e:
        raise UpstreamError(f"{service} stream failed: {type(e).__name__}") from None
