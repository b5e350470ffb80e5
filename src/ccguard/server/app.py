"""FastAPI app factory: an OpenAI-compatible proxy that screens prompts and streams.

- A flagged prompt gets a normal completion whose content is the refusal, ``finish_reason: "content_filter"``;
  the upstream is never called.
- Streaming responses are buffered per chunk, scored, and only then forwarded. On a flag the stream ends with a
  ``content_filter`` chunk and the upstream request is cancelled; nothing after the flagged chunk is sent.
- Upstream timeouts, disconnects and 5xx become OpenAI-style errors. A classifier failure fails closed unless
  ``fail_open`` is set.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ccguard.errors import CcguardError
from ccguard.guard import Guard, Verdict
from ccguard.llm.base import GenerateParams, LLMBackend, StreamEnd
from ccguard.records import Message, render_prompt
from ccguard.server.batcher import InputBatcher
from ccguard.server.metrics import Metrics

log = logging.getLogger("ccguard.server")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ServerSettings(BaseModel):
    """Proxy behaviour and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    api_keys: frozenset[str] = Field(default=frozenset(), description="Accepted bearer keys; empty means no auth.")
    fail_open: bool = Field(default=False, description="On a classifier error, let traffic through (default: block).")
    log_prompts: bool = Field(default=False, description="Include prompt text in logs (off by default).")
    max_request_bytes: int = Field(default=1_000_000, description="Largest request body accepted.")
    max_prompt_chars: int = Field(default=200_000, description="Longest rendered prompt accepted.")
    max_tokens_cap: int = Field(default=4096, description="Upper bound on max_tokens passed upstream.")
    upstream_timeout: float = Field(default=60.0, description="Seconds to wait on the upstream per request.")
    model_name: str = Field(default="ccguard", description="Model id reported when the upstream has none.")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    input: str | list[str]
    model: str | None = None


def _error(status: int, message: str, type_: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": code}}, status_code=status)


def _content(part: Any) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, list):
        return "".join(p.get("text", "") for p in part if isinstance(p, dict) and p.get("type") in (None, "text"))
    return ""


def _chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish: str | None) -> str:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _read_bounded(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    buf = bytearray()
    async for piece in request.stream():
        buf += piece
        if len(buf) > limit:
            return None
    return bytes(buf)


def create_app(guard: Guard, upstream: LLMBackend, settings: ServerSettings | None = None) -> FastAPI:
    """Build the proxy app around a loaded guard and an upstream backend."""
    settings = settings or ServerSettings()
    metrics = Metrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher = InputBatcher(guard)
        batcher.start()
        state["batcher"] = batcher
        try:
            yield
        finally:
            await batcher.stop()
            await upstream.aclose()

    app = FastAPI(title="ccguard proxy", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.metrics = metrics
    app.state.settings = settings

    def authorised(request: Request) -> bool:
        if not settings.api_keys:
            return True
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        # Compare against every key in constant time, so timing reveals neither which key nor how much matched.
        ok = False
        for key in settings.api_keys:
            ok |= hmac.compare_digest(token.encode(), key.encode())
        return ok

    def deny(request: Request) -> JSONResponse | None:
        if authorised(request):
            return None
        return _error(401, "invalid or missing API key", "authentication_error", "invalid_api_key")

    def audit(event: str, prompt_text: str | None, verdict: Verdict | None, **extra: Any) -> None:
        rec: dict[str, Any] = {"event": event, **extra}
        if verdict is not None:
            rec.update(allowed=verdict.allowed, stage=verdict.stage, category=verdict.category,
                       score=round(verdict.score, 5), latency_ms=round(verdict.latency_ms, 2))
        if settings.log_prompts and prompt_text is not None:
            rec["prompt"] = prompt_text
        log.info(json.dumps(rec, ensure_ascii=False))

    async def check_input(messages: list[Message]) -> Verdict:
        t0 = time.perf_counter()
        try:
            v = await state["batcher"].check(messages)
        except Exception:  # noqa: BLE001
            metrics.classifier_errors.labels("input").inc()
            log.exception(json.dumps({"event": "classifier_error", "stage": "input"}))
            thr = guard.policy.input_threshold
            v = Verdict(allowed=settings.fail_open, stage="input", score=0.0 if settings.fail_open else 1.0, threshold=thr)
        metrics.latency.labels("input").observe(time.perf_counter() - t0)
        return v

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "constitution": guard.manifest.constitution.get("name"), "output_classifier": guard.output_classifier is not None}

    @app.get("/metrics")
    async def prom(request: Request) -> Response:
        if (denied := deny(request)) is not None:
            return denied
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        if (denied := deny(request)) is not None:
            return denied
        name = upstream.model or settings.model_name
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ccguard"}]}

    @app.post("/v1/moderations")
    async def moderations(request: Request) -> Any:
        if (denied := deny(request)) is not None:
            return denied
        raw = await _read_bounded(request, settings.max_request_bytes)
        if raw is None:
            return _error(413, "request too large", "invalid_request_error")
        try:
            req = ModerationRequest.model_validate_json(raw)
        except ValidationError as e:
            return _error(400, f"invalid request: {e.errors()[0]['msg']}", "invalid_request_error")
        texts = [req.input] if isinstance(req.input, str) else req.input
        if any(len(t) > settings.max_prompt_chars for t in texts):
            return _error(400, "input too long", "invalid_request_error")
        scores = await asyncio.to_thread(guard.input_classifier.score, texts)
        thr = guard.policy.input_threshold
        cats = guard.input_classifier.categories
        results = []
        for s in scores:
            flagged = s.score > thr
            results.append({
                "flagged": flagged,
                "categories": {c: flagged and c == s.category for c in cats},
                "category_scores": {c: round(s.score if c == s.category else 0.0, 6) for c in cats},
            })
            if flagged:
                metrics.blocks.labels("input", s.category or "unknown").inc()
        metrics.requests.labels("moderations", "ok").inc()
        return {"id": f"modr-{uuid.uuid4().hex[:24]}", "model": f"ccguard-{guard.manifest.constitution.get('name')}", "results": results}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        if (denied := deny(request)) is not None:
            metrics.requests.labels("chat", "unauthorised").inc()
            return denied
        raw = await _read_bounded(request, settings.max_request_bytes)
        if raw is None:
            return _error(413, "request too large", "invalid_request_error")
        try:
            req = ChatRequest.model_validate_json(raw)
            messages = [Message(role=str(m.get("role", "user")), content=_content(m.get("content"))) for m in req.messages]
        except ValidationError as e:
            err = e.errors()[0]
            return _error(400, f"invalid request: {'.'.join(map(str, err['loc']))}: {err['msg']}", "invalid_request_error")
        if req.n not in (None, 1):
            return _error(400, "only n=1 is supported", "invalid_request_error")
        prompt_text = render_prompt(messages)
        if len(prompt_text) > settings.max_prompt_chars:
            return _error(400, f"prompt longer than {settings.max_prompt_chars} characters", "invalid_request_error")

        model = req.model or upstream.model or settings.model_name
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        verdict = await check_input(messages)
        if not verdict.allowed:
            metrics.blocks.labels("input", verdict.category or "unknown").inc()
            metrics.requests.labels("chat", "blocked_input").inc()
            audit("blocked", prompt_text, verdict)
            return refusal(req.stream, cid, model, created)

        params = GenerateParams(
            max_tokens=min(req.max_completion_tokens or req.max_tokens or 512, settings.max_tokens_cap),
            temperature=0.7 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            stop=[req.stop] if isinstance(req.stop, str) else req.stop,
            seed=req.seed,
        )
        extra = {k: v for k, v in (req.model_extra or {}).items() if k not in {"stream_options", "user"}}
        if req.model:
            extra["model"] = req.model
        if req.stream:
            return StreamingResponse(stream_chat(messages, prompt_text, params, extra, cid, model, created), media_type="text/event-stream")
        return await complete_chat(messages, prompt_text, params, extra, cid, model, created)

    def refusal(stream: bool, cid: str, model: str, created: int) -> Any:
        text = guard.refusal
        if stream:
            async def gen() -> AsyncIterator[str]:
                yield _chunk(cid, model, created, {"role": "assistant", "content": text}, None)
                yield _chunk(cid, model, created, {}, "content_filter")
                yield "data: [DONE]\n\n"
            return StreamingResponse(gen(), media_type="text/event-stream")
        return {
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "content_filter"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    async def complete_chat(messages, prompt_text, params, extra, cid, model, created) -> Any:
        try:
            comp = await asyncio.wait_for(upstream.generate(messages, params, extra), settings.upstream_timeout)
        except TimeoutError:
            metrics.upstream_errors.labels("timeout").inc()
            return _error(504, "upstream timed out", "upstream_error", "upstream_timeout")
        except (CcguardError, httpx.HTTPError) as e:
            metrics.upstream_errors.labels("error").inc()
            return _error(502, f"upstream error: {e}", "upstream_error", "upstream_error")
        text, finish = comp.text, comp.finish_reason
        if guard.output_classifier is not None:
            try:
                ov = await asyncio.to_thread(guard.check_output, messages, text)
            except Exception:  # noqa: BLE001
                metrics.classifier_errors.labels("output").inc()
                ov = None
            if ov is None and not settings.fail_open:
                text, finish = "", "content_filter"
            elif ov is not None and not ov.allowed:
                metrics.blocks.labels("output", ov.category or "unknown").inc()
                audit("blocked", prompt_text, ov)
                text, finish = text[: ov.stop_char or 0], "content_filter"
        metrics.requests.labels("chat", "ok" if finish != "content_filter" else "blocked_output").inc()
        u = comp.usage
        return {
            "id": cid, "object": "chat.completion", "created": created, "model": comp.model or model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.prompt_tokens + u.completion_tokens},
        }

    async def stream_chat(messages, prompt_text, params, extra, cid, model, created) -> AsyncIterator[str]:
        yield _chunk(cid, model, created, {"role": "assistant", "content": ""}, None)
        session = guard.start_stream(messages) if guard.output_classifier is not None else None
        released = 0
        finish = "stop"
        upstream_finish = "stop"  # 'length' when the upstream ran out of tokens, passed through unless the guard halts
        agen = upstream.stream(messages, params, extra)
        t_start = time.perf_counter()
        try:
            while True:
                try:
                    piece = await asyncio.wait_for(agen.__anext__(), settings.upstream_timeout)
                except StopAsyncIteration:
                    break
                if isinstance(piece, StreamEnd):
                    upstream_finish = piece.reason
                    continue
                if session is None:
                    yield _chunk(cid, model, created, {"content": piece}, None)
                    continue
                t0 = time.perf_counter()
                try:
                    await asyncio.to_thread(session.feed, piece)
                except Exception:  # noqa: BLE001
                    metrics.classifier_errors.labels("output").inc()
                    if not settings.fail_open:
                        finish = "content_filter"
                        break
                    session = None
                    continue
                metrics.latency.labels("output").observe(time.perf_counter() - t0)
                new = session.text[released : session.released_chars]
                if new:
                    released = session.released_chars
                    yield _chunk(cid, model, created, {"content": new}, None)
                if session.halted:
                    finish = "content_filter"
                    break
            if session is not None and finish == "stop":
                await asyncio.to_thread(session.finish)
                new = session.text[released : session.released_chars]
                if new:
                    yield _chunk(cid, model, created, {"content": new}, None)
                if session.halted:
                    finish = "content_filter"
        except TimeoutError:
            metrics.upstream_errors.labels("timeout").inc()
            yield f"data: {json.dumps({'error': {'message': 'upstream timed out', 'type': 'upstream_error', 'code': 'upstream_timeout'}})}\n\n"
            return
        except (CcguardError, httpx.HTTPError) as e:
            metrics.upstream_errors.labels("error").inc()
            yield f"data: {json.dumps({'error': {'message': f'upstream error: {e}', 'type': 'upstream_error', 'code': 'upstream_error'}})}\n\n"
            return
        finally:
            await agen.aclose()  # cancels the upstream request when we stop early
        if finish == "content_filter":
            metrics.requests.labels("chat", "blocked_output").inc()
            if session is not None and session.halted:
                v = guard.policy.decide("output", session.max_score, stop_char=session.stop_char, latency_ms=1000 * (time.perf_counter() - t_start))
                metrics.blocks.labels("output", "unknown").inc()
                audit("blocked", prompt_text, v)
        else:
            metrics.requests.labels("chat", "ok").inc()
            finish = upstream_finish
        yield _chunk(cid, model, created, {}, finish)
        yield "data: [DONE]\n\n"

    return app


def require_key_if_exposed(host: str, api_keys: frozenset[str]) -> None:
    """Refuse to serve beyond loopback without API keys."""
    if host not in LOOPBACK and not host.startswith("127.") and not api_keys:
        raise CcguardError(f"binding to {host} exposes the proxy beyond loopback: pass --api-keys FILE|ENV")
