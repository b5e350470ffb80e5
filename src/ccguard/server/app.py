"""FastAPI app factory: an OpenAI-compatible proxy that screens prompts and streams.

- Every text the upstream will read (all messages, names, tool definitions, tool calls and results, the
  response-format schema) is screened by the input classifier; other fields are forwarded only from an allowlist.
- A flagged prompt gets a normal completion whose content is the refusal, ``finish_reason: "content_filter"``;
  the upstream is never called.
- Streaming responses (text and tool-call arguments) are scored per chunk and only then forwarded. On a flag the
  stream ends with a ``content_filter`` chunk and the upstream request is cancelled; nothing after the flagged
  chunk is sent.
- Input screening runs in a worker pool under a per-request time budget; past it the request fails closed with a
  503. Upstream slots are bounded: the wait for one is separate from the upstream timeout and ends in a 503.
- All classifier model work runs on one worker thread, in arrival order. Input checks of concurrent requests are
  batched, and so are the chunks of concurrent streams (``OutputBatcher``: one batched model call per round). While
  the work is behind by more than ``max_queue_delay``, while admitted streams' pieces wait in the proxy longer than
  ``max_stream_lag`` (the median over streams), or when no slot is free and ``max_waiting`` requests already wait
  for one or are being screened, new requests get an immediate 503 with ``Retry-After``, before any input check is
  spent on them: the streams already admitted keep a bounded latency.
- A client that disconnects, or a timeout, cancels the upstream work (local generation stops within one step).
- Every error is an OpenAI-style JSON error. A classifier failure fails closed unless ``fail_open`` is set.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ccguard.conversation import ScreenText, render_conversation, render_tool_calls
from ccguard.errors import CcguardError
from ccguard.guard import Guard
from ccguard.llm.base import GenerateParams, LLMBackend, ProbeLogits, StreamEnd, ToolCallDelta
from ccguard.policy import Stage, Verdict
from ccguard.records import Message
from ccguard.server.batcher import InputBatcher, OutputBatcher
from ccguard.server.metrics import Metrics
from ccguard.server.pump import UpstreamPump
from ccguard.server.relay import Relay
from ccguard.server.schema import ChatRequest, screen_texts
from ccguard.server.worker import ModelWorker, StreamLag

log = logging.getLogger("ccguard.server")


class ServerSettings(BaseModel):
    """Proxy behaviour and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    api_keys: frozenset[str] = Field(default=frozenset(), description="Accepted bearer keys; empty means no auth.")
    fail_open: bool = Field(default=False, description="On a classifier error, let traffic through (default: block).")
    log_prompts: bool = Field(default=False, description="Include prompt text in logs (off by default).")
    max_request_bytes: int = Field(default=1_000_000, description="Largest request body accepted.")
    max_prompt_chars: int = Field(default=200_000, description="Most characters of screened text per request.")
    max_tokens_cap: int = Field(default=4096, description="Upper bound on max_tokens passed upstream.")
    upstream_timeout: float = Field(default=60.0, description="Seconds to wait on the upstream (per stream event).")
    screen_timeout: float = Field(default=15.0, description="Time budget for screening one request's input.")
    slots: int = Field(default=8, ge=1, description="Upstream requests in flight at once.")
    slot_timeout: float = Field(default=10.0, description="Longest wait for an upstream slot before a 503.")
    max_waiting: int | None = Field(default=None, ge=0, description="Requests that may wait for an upstream slot at "
                                    "once (default: as many as there are slots); beyond that, an immediate 503.")
    max_queue_delay: float = Field(default=0.5, gt=0, description="Shed new requests with a 503 while classifier "
                                   "work has been queued longer than this many seconds.")
    max_stream_lag: float = Field(default=0.5, gt=0, description="Shed new requests with a 503 while admitted "
                                  "streams are this many seconds behind their upstream (the median over streams of "
                                  "the time their latest piece waited in the proxy).")
    max_moderation_inputs: int = Field(default=64, ge=1, description="Most texts in one /v1/moderations call.")
    screen_workers: int = Field(default=2, ge=1, description="Threads that decode and window prompts.")
    model_name: str = Field(default="ccguard", description="Model id reported when the upstream has none.")
    report_verdicts: bool = Field(default=False, description="Add a 'ccguard' object (allowed, stage, category, "
                                  "released characters) to each completion and to a stream's last chunk. Off by "
                                  "default: scores help an attacker tune a prompt. The arena turns it on for its own "
                                  "loopback proxy.")


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    input: str | list[str]
    model: str | None = None


class ApiError(Exception):
    """An error answered as OpenAI's JSON error shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type_, code, headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _error(status: int, message: str, type_: str, code: str | None = None) -> JSONResponse:
    return ApiError(status, message, type_, code).response()


def _chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish: str | None,
           report: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if report is not None:
        body["ccguard"] = report
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _sse_error(message: str, code: str) -> str:
    return f"data: {json.dumps({'error': {'message': message, 'type': 'upstream_error', 'code': code}})}\n\n"


async def _read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "request too large")
    buf = bytearray()
    try:
        async for piece in request.stream():
            buf += piece
            if len(buf) > limit:
                raise ApiError(413, "request too large")
    except ClientDisconnect:
        raise ApiError(400, "client disconnected", code="client_disconnected") from None
    return bytes(buf)


def _invalid(e: ValidationError) -> ApiError:
    err = e.errors()[0]
    where = ".".join(map(str, err["loc"])) or "(body)"
    return ApiError(400, f"invalid request: {where}: {err['msg']}")


async def _until_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Slot:
    """One upstream slot, released exactly once (by the request, the stream's end, or the response's cleanup)."""

    def __init__(self, sem: asyncio.Semaphore) -> None:
        self._sem, self._held = sem, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._sem.release()

    async def arelease(self) -> None:
        self.release()


def create_app(guard: Guard, upstream: LLMBackend, settings: ServerSettings | None = None) -> FastAPI:
    """Build the proxy app around a loaded guard and an upstream backend."""
    settings = settings or ServerSettings()
    metrics = Metrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker = ModelWorker(settings.max_queue_delay)
        batcher = InputBatcher(guard, worker)
        batcher.start()
        out_batcher = OutputBatcher(worker)
        out_batcher.start()
        state["out_batcher"] = out_batcher
        state["worker"] = app.state.worker = worker
        state["lag"] = app.state.lag = StreamLag(settings.max_stream_lag)
        state["batcher"] = batcher
        state["slots"] = asyncio.Semaphore(settings.slots)
        state["waiting"] = 0  # requests waiting for an upstream slot
        state["screening"] = 0  # chat requests whose input is being screened
        state["pool"] = ThreadPoolExecutor(settings.screen_workers, thread_name_prefix="ccguard-screen")
        try:
            yield
        finally:
            await batcher.stop()
            await out_batcher.stop()
            state["pool"].shutdown(wait=False, cancel_futures=True)
            worker.shutdown()
            await upstream.aclose()

    app = FastAPI(title="ccguard proxy", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.metrics = metrics
    app.state.settings = settings

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail), "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        return _error(400, f"invalid request: {e.errors()[0].get('msg', 'malformed')}", "invalid_request_error")

    @app.middleware("http")
    async def internal_error(request: Request, call_next: Any) -> Response:
        # A bug must not leak a traceback to the client or flood the log: one JSON error, one log line. (An
        # exception handler for Exception would still re-raise into the server's own traceback logging.)
        try:
            return await call_next(request)
        except Exception as e:  # noqa: BLE001
            log.error(json.dumps({"event": "internal_error", "error": type(e).__name__, "path": request.url.path}))
            return _error(500, "internal error", "server_error", "internal_error")

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

    def require_auth(request: Request) -> None:
        if not authorised(request):
            raise ApiError(401, "invalid or missing API key", "authentication_error", "invalid_api_key")

    def audit(event: str, prompt_text: str | None, verdict: Verdict | None, **extra: Any) -> None:
        rec: dict[str, Any] = {"event": event, **extra}
        if verdict is not None:
            rec.update(allowed=verdict.allowed, stage=verdict.stage, category=verdict.category,
                       score=round(verdict.score, 5), latency_ms=round(verdict.latency_ms, 2))
        if settings.log_prompts and prompt_text is not None:
            rec["prompt"] = prompt_text
        log.info(json.dumps(rec, ensure_ascii=False))

    def shed_if_overloaded(endpoint: str) -> None:
        """Refuse new work while the classifiers are behind, before spending anything on it."""
        if (state["worker"].overloaded() or state["out_batcher"].queue_delay() > settings.max_queue_delay
                or state["lag"].overloaded()):
            metrics.requests.labels(endpoint, "shed").inc()
            raise ApiError(503, "the guard is overloaded; retry shortly", "server_error", "server_overloaded",
                           headers={"Retry-After": "1"})

    def slots_busy() -> ApiError:
        """The 503 for a request that gets no upstream slot (counted as such)."""
        metrics.requests.labels("chat", "busy").inc()
        return ApiError(503, "all upstream slots are busy; retry shortly", "server_error", "server_busy",
                        headers={"Retry-After": "1"})

    def report(verdict: Verdict | None, released: int | None = None) -> dict[str, Any] | None:
        """The verdict as the arena reads it, when ``report_verdicts`` is on (no scores: only what a page shows)."""
        if not settings.report_verdicts:
            return None
        if verdict is None:
            return {"allowed": True, "stage": None, "category": None, "released_chars": released}
        return {"allowed": verdict.allowed, "stage": None if verdict.allowed else verdict.stage,
                "category": verdict.category, "released_chars": released}

    def failed_verdict(stage: Stage) -> Verdict:
        return guard.policy.failed(stage, fail_open=settings.fail_open)

    async def screen(texts: Sequence[ScreenText]) -> list[Verdict]:
        """Input verdicts for texts: decoding and windowing in the worker pool, the model in the shared batcher,
        all within the time budget. Past the budget: a 503, whatever ``fail_open`` says (nothing was screened)."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(settings.screen_timeout):
                prepared = await asyncio.gather(*(
                    loop.run_in_executor(state["pool"], partial(guard.prepare_input, history=t.history), t.text)
                    for t in texts))
                verdicts = list(await asyncio.gather(*(state["batcher"].check(p) for p in prepared)))
        except TimeoutError:
            metrics.classifier_errors.labels("input_timeout").inc()
            log.warning(json.dumps({"event": "screen_timeout", "chars": sum(len(t.text) for t in texts)}))
            raise ApiError(503, f"input screening exceeded its {settings.screen_timeout:g} s budget", "server_error",
                           "screening_timeout") from None
        except Exception as e:  # noqa: BLE001 - the classifier failed: fail closed (or open, if configured)
            metrics.classifier_errors.labels("input").inc()
            log.error(json.dumps({"event": "classifier_error", "stage": "input", "error": type(e).__name__}))
            verdicts = [failed_verdict("input") for _ in texts]
        metrics.latency.labels("input").observe(time.perf_counter() - t0)
        if escalated := sum(bool(v.escalated) for v in verdicts):
            metrics.escalations.inc(escalated)
        return verdicts

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "constitution": guard.manifest.constitution.get("name"), "output_classifier": guard.output_classifier is not None}

    @app.get("/metrics")
    async def prom(request: Request) -> Response:
        require_auth(request)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        require_auth(request)
        name = upstream.model or settings.model_name
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ccguard"}]}

    @app.post("/v1/moderations")
    async def moderations(request: Request) -> Any:
        require_auth(request)
        raw = await _read_bounded(request, settings.max_request_bytes)
        try:
            req = ModerationRequest.model_validate_json(raw)
        except ValidationError as e:
            raise _invalid(e) from None
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts or len(texts) > settings.max_moderation_inputs:
            raise ApiError(400, f"input: between 1 and {settings.max_moderation_inputs} texts per request")
        if any(len(t) > settings.max_prompt_chars for t in texts):
            raise ApiError(400, "input too long")
        shed_if_overloaded("moderations")
        verdicts = await screen([ScreenText(text=t) for t in texts])
        cats = guard.input_classifier.categories
        results = []
        for v in verdicts:
            results.append({
                "flagged": not v.allowed,
                "categories": {c: not v.allowed and c == v.category for c in cats},
                "category_scores": {c: round(v.score if c == v.category else 0.0, 6) for c in cats},
            })
            if not v.allowed:
                metrics.blocks.labels("input", v.category or "unknown").inc()
        metrics.requests.labels("moderations", "ok").inc()
        return {"id": f"modr-{uuid.uuid4().hex[:24]}", "model": f"ccguard-{guard.manifest.constitution.get('name')}", "results": results}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        if not authorised(request):
            metrics.requests.labels("chat", "unauthorised").inc()
        require_auth(request)
        raw = await _read_bounded(request, settings.max_request_bytes)
        try:
            req = ChatRequest.model_validate_json(raw)
            messages = req.to_messages()
            stops = req.stops()
        except ValidationError as e:
            raise _invalid(e) from None
        except ValueError as e:
            raise ApiError(400, f"invalid request: {e}") from None
        if req.n not in (None, 1):
            raise ApiError(400, "only n=1 is supported")
        texts = screen_texts(req, messages)
        if sum(len(t.text) for t in texts) > settings.max_prompt_chars:
            raise ApiError(400, f"prompt longer than {settings.max_prompt_chars} characters")
        prompt_text = render_conversation(messages)
        shed_if_overloaded("chat")
        max_waiting = settings.slots if settings.max_waiting is None else settings.max_waiting
        # No free slot and the line is full, counting the requests being screened: refuse now, before spending an
        # input check on a request that would be refused a slot afterwards.
        if state["slots"].locked() and state["waiting"] + state["screening"] >= max_waiting:
            raise slots_busy()

        model = req.model or upstream.model or settings.model_name
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        state["screening"] += 1
        try:
            verdict = max(await screen(texts), key=lambda v: (not v.allowed, v.score))
        finally:
            state["screening"] -= 1
        if not verdict.allowed:
            metrics.blocks.labels("input", verdict.category or "unknown").inc()
            metrics.requests.labels("chat", "blocked_input").inc()
            audit("blocked", prompt_text, verdict, dropped_fields=req.dropped() or None)
            return refusal(req.stream, cid, model, created, report(verdict, 0))

        params = GenerateParams(
            max_tokens=min(req.max_completion_tokens or req.max_tokens or 512, settings.max_tokens_cap),
            temperature=0.7 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            stop=stops,
            seed=req.seed,
        )
        extra = req.forwarded()
        if req.model:
            extra["model"] = req.model
        if state["slots"].locked() and state["waiting"] >= max_waiting:
            raise slots_busy()
        state["waiting"] += 1
        try:
            await asyncio.wait_for(state["slots"].acquire(), settings.slot_timeout)
        except TimeoutError:
            raise slots_busy() from None
        finally:
            state["waiting"] -= 1
        slot = _Slot(state["slots"])
        if req.stream:
            gen = stream_chat(messages, prompt_text, params, extra, cid, model, created, slot)
            return StreamingResponse(gen, media_type="text/event-stream", background=BackgroundTask(slot.arelease))
        try:
            return await complete_chat(request, messages, prompt_text, params, extra, cid, model, created)
        finally:
            slot.release()

    def refusal(stream: bool, cid: str, model: str, created: int, rep: dict[str, Any] | None) -> Any:
        text = guard.refusal
        if stream:
            async def gen() -> AsyncIterator[str]:
                yield _chunk(cid, model, created, {"role": "assistant", "content": text}, None)
                yield _chunk(cid, model, created, {}, "content_filter", rep)
                yield "data: [DONE]\n\n"
            return StreamingResponse(gen(), media_type="text/event-stream")
        body = {
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "content_filter"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
        if rep is not None:
            body["ccguard"] = rep
        return body

    async def complete_chat(request: Request, messages: list[Message], prompt_text: str, params: GenerateParams,
                            extra: dict[str, Any], cid: str, model: str, created: int) -> Any:
        work = asyncio.ensure_future(asyncio.wait_for(upstream.generate(messages, params, extra), settings.upstream_timeout))
        gone = asyncio.ensure_future(_until_disconnect(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():  # the client left: stop the upstream (a local model stops within one step)
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                metrics.requests.labels("chat", "client_gone").inc()
        if work.cancelled():
            return Response(status_code=499)
        try:
            comp = work.result()
        except TimeoutError:
            metrics.upstream_errors.labels("timeout").inc()
            raise ApiError(504, "upstream timed out", "upstream_error", "upstream_timeout") from None
        except (CcguardError, httpx.HTTPError) as e:
            metrics.upstream_errors.labels("error").inc()
            raise ApiError(502, f"upstream error: {e}", "upstream_error", "upstream_error") from None
        text, finish, calls = comp.text, comp.finish_reason, comp.tool_calls
        ov: Verdict | None = None
        if guard.output_classifier is not None:
            screened = "\n".join(x for x in (text, render_tool_calls(calls)) if x)
            try:
                ov = await state["worker"].run(guard.check_output, messages, screened)
            except Exception as e:  # noqa: BLE001
                metrics.classifier_errors.labels("output").inc()
                log.error(json.dumps({"event": "classifier_error", "stage": "output", "error": type(e).__name__}))
                ov = failed_verdict("output")
            if not ov.allowed:
                metrics.blocks.labels("output", ov.category or "unknown").inc()
                audit("blocked", prompt_text, ov)
                text, finish, calls = text[: min(ov.stop_char or 0, len(text))], "content_filter", None
        metrics.requests.labels("chat", "ok" if finish != "content_filter" else "blocked_output").inc()
        u = comp.usage
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        body = {
            "id": cid, "object": "chat.completion", "created": created, "model": comp.model or model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.prompt_tokens + u.completion_tokens},
        }
        if (rep := report(ov, len(text))) is not None:
            body["ccguard"] = rep
        return body

    async def stream_chat(messages: list[Message], prompt_text: str, params: GenerateParams, extra: dict[str, Any],
                          cid: str, model: str, created: int, slot: _Slot) -> AsyncIterator[str]:
        # The gate's first model call (the prompt's cache) runs on the model worker too, off the event loop.
        probed = getattr(upstream, "probe", None) is not None and upstream.probe is guard.probe
        gate = (await state["worker"].run(partial(guard.start_stream, probe=probed), messages)
                if guard.output_classifier is not None else None)
        relay = Relay(gate)
        finish = "stop"
        upstream_finish = "stop"  # e.g. 'length' or 'tool_calls', passed through unless the guard halts
        # Read ahead of the classifiers, each piece stamped on arrival: how long pieces wait here is the lag.
        pump = UpstreamPump(upstream.stream(messages, params, extra))
        lag, key = state["lag"], id(relay)
        t_start = time.perf_counter()
        try:
            yield _chunk(cid, model, created, {"role": "assistant", "content": ""}, None)
            while True:
                try:
                    arrived, piece = await pump.next(settings.upstream_timeout)
                except StopAsyncIteration:
                    break
                if isinstance(piece, StreamEnd):
                    upstream_finish = piece.reason
                    continue
                if isinstance(piece, ProbeLogits):
                    if gate is not None:
                        gate.add_probe(piece.values)
                    continue
                lag.taken(key, arrived)
                fed = relay.tool_call(piece.delta) if isinstance(piece, ToolCallDelta) else relay.text(piece)
                # Text that arrived meanwhile goes to the gate with it: one feed, and one wait, instead of several.
                for more in pump.more(lambda p: type(p) is str or isinstance(p, ToolCallDelta)):
                    fed += relay.tool_call(more.delta) if isinstance(more, ToolCallDelta) else relay.text(more)
                if gate is not None and fed:
                    t0 = time.perf_counter()
                    try:
                        await state["out_batcher"].feed(gate, fed)
                    except Exception as e:  # noqa: BLE001
                        metrics.classifier_errors.labels("output").inc()
                        log.error(json.dumps({"event": "classifier_error", "stage": "output", "error": type(e).__name__}))
                        if not settings.fail_open:
                            finish = "content_filter"
                            break
                        relay.gate = gate = None
                    else:
                        metrics.latency.labels("output").observe(time.perf_counter() - t0)
                metrics.stream_lag.observe(lag.released(key))
                sending = time.monotonic()
                for delta in relay.deltas():
                    yield _chunk(cid, model, created, delta, None)
                pump.client_wait += time.monotonic() - sending  # a slow reader's wait is not the proxy's lag
                if gate is not None and gate.halted:
                    finish = "content_filter"
                    break
            if gate is not None and finish == "stop":
                await state["out_batcher"].feed(gate, None)
                for delta in relay.deltas():
                    yield _chunk(cid, model, created, delta, None)
                if gate.halted:
                    finish = "content_filter"
        except TimeoutError:
            metrics.upstream_errors.labels("timeout").inc()
            yield _sse_error("upstream timed out", "upstream_timeout")
            return
        except (CcguardError, httpx.HTTPError) as e:
            metrics.upstream_errors.labels("error").inc()
            yield _sse_error(f"upstream error: {e}", "upstream_error")
            return
        finally:
            # Cancels the upstream request when we stop early or the client left (a local model stops within one
            # step), then frees the slot.
            lag.end(key)
            try:
                await pump.aclose()
            finally:
                slot.release()
        final: Verdict | None = None
        if finish == "content_filter":
            metrics.requests.labels("chat", "blocked_output").inc()
            if gate is not None and gate.halted:
                final = gate.verdict(latency_ms=1000 * (time.perf_counter() - t_start))
                metrics.blocks.labels("output", "unknown").inc()
                audit("blocked", prompt_text, final)
            else:  # a classifier failure, failing closed
                final = failed_verdict("output")
        else:
            metrics.requests.labels("chat", "ok").inc()
            finish = upstream_finish
        yield _chunk(cid, model, created, {}, finish, report(final, relay.sent))
        yield "data: [DONE]\n\n"

    return app


def is_loopback(host: str) -> bool:
    """Whether a bind address is loopback, by parsing it (a name like '127.evil.example.com' is not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_key_if_exposed(host: str, api_keys: frozenset[str]) -> None:
    """Refuse to serve beyond loopback without API keys."""
    if not is_loopback(host) and not api_keys:
        raise CcguardError(f"binding to {host} exposes the proxy beyond loopback: pass --api-keys FILE|ENV")
