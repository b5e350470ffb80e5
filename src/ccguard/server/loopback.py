"""Loopback helpers: run an app under uvicorn in a thread (tests, benchmarks, and `ccguard arena`, which runs its
private guarded proxy this way), and a fixed-rate OpenAI-compatible upstream for tests and benchmarks that streams
a fixed text (and can die mid-stream)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not t.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)


class FakeUpstream:
    """An OpenAI-compatible upstream that streams a fixed text (or one built from the request by ``reply``) at a
    fixed rate, optionally followed by tool calls (their arguments streamed in pieces too); it can die mid-stream. It
    records the bodies it received."""

    def __init__(
        self, text: str, piece: int = 6, delay: float = 0.0, die_after: int | None = None, finish: str = "stop",
        tool_calls: list[dict[str, Any]] | None = None, reply: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.reply = reply  # when given, the text is built from each request's body instead
        self.text, self.piece, self.delay, self.die_after, self.finish = text, piece, delay, die_after, finish
        self.tool_calls = tool_calls
        self.calls = 0
        self.sent_pieces = 0
        self.cancelled = False
        self.bodies: list[dict[str, Any]] = []
        self.app = FastAPI()

        @self.app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            self.calls += 1
            self.bodies.append(body)
            text = self.reply(body) if self.reply is not None else self.text
            if not body.get("stream"):
                message: dict[str, Any] = {"role": "assistant", "content": text or None}
                if self.tool_calls:
                    message["tool_calls"] = self.tool_calls
                return {"id": "x", "object": "chat.completion", "created": 0, "model": body.get("model", "fake"),
                        "choices": [{"index": 0, "message": message, "finish_reason": self.finish}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1}}

            async def gen():
                try:
                    for i in range(0, len(text), self.piece):
                        if self.die_after is not None and i // self.piece >= self.die_after:
                            raise RuntimeError("upstream crashed")
                        chunk = {"choices": [{"index": 0, "delta": {"content": text[i : i + self.piece]}, "finish_reason": None}]}
                        self.sent_pieces += 1
                        yield f"data: {json.dumps(chunk)}\n\n"
                        await asyncio.sleep(self.delay)
                    for k, call in enumerate(self.tool_calls or ()):
                        fn = call["function"]
                        head = {"index": k, "id": call["id"], "type": "function", "function": {"name": fn["name"], "arguments": ""}}
                        yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'tool_calls': [head]}, 'finish_reason': None}]})}\n\n"
                        for j in range(0, len(fn["arguments"]), self.piece):
                            part = {"index": k, "function": {"arguments": fn["arguments"][j : j + self.piece]}}
                            self.sent_pieces += 1
                            yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'tool_calls': [part]}, 'finish_reason': None}]})}\n\n"
                            await asyncio.sleep(self.delay)
                    yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': self.finish}]})}\n\n"
                    yield "data: [DONE]\n\n"
                except asyncio.CancelledError:
                    self.cancelled = True
                    raise

            return StreamingResponse(gen(), media_type="text/event-stream")


def backend_app(backend: Any) -> FastAPI:
    """A minimal OpenAI-compatible server in front of any :class:`~ccguard.llm.base.LLMBackend` (no guard), so the
    HTTP client can be tested for real against a real model on loopback."""
    from ccguard.llm.base import GenerateParams, StreamEnd
    from ccguard.records import Message

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        msgs = [Message(role=m["role"], content=m["content"]) for m in body["messages"]]
        params = GenerateParams(max_tokens=body.get("max_tokens", 64), temperature=body.get("temperature", 0.0),
                                top_p=body.get("top_p", 1.0), seed=body.get("seed"))
        if not body.get("stream"):
            out = await backend.generate(msgs, params)
            return {"id": "x", "object": "chat.completion", "created": 0, "model": out.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text}, "finish_reason": out.finish_reason}],
                    "usage": {"prompt_tokens": out.usage.prompt_tokens, "completion_tokens": out.usage.completion_tokens}}

        async def gen():
            finish = "stop"
            async for piece in backend.stream(msgs, params):
                if isinstance(piece, StreamEnd):
                    finish = piece.reason
                elif piece:
                    yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': piece}, 'finish_reason': None}]})}\n\n"
            yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': finish}]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    return app
