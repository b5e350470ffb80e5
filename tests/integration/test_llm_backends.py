"""LLM backends for real: SmolLM2 locally, and the OpenAI-compatible client over loopback HTTP."""

from __future__ import annotations

import asyncio

import pytest

from ccguard.llm.base import GenerateParams, create_backend
from ccguard.records import Message
from ccguard.server.loopback import FakeUpstream, serving

MSG = [Message(role="user", content="Name three colours.")]


@pytest.fixture(scope="module")
def local():
    return create_backend("local", model="smollm2")


def test_local_smollm2_generates_and_streams(local):
    p = GenerateParams(max_tokens=12, temperature=0.0)
    out = local.generate_sync(MSG, p)
    assert out.text.strip() and out.usage.completion_tokens <= 12 and out.usage.prompt_tokens > 0
    pieces = list(local.stream_sync(MSG, p))
    assert len(pieces) >= 2
    assert "".join(pieces).strip() == out.text.strip()  # greedy: the stream says what generate says


def test_local_stream_stops_when_the_consumer_stops(local):
    async def first_piece() -> str:
        agen = local.stream(MSG, GenerateParams(max_tokens=200, temperature=0.0))
        piece = await agen.__anext__()
        await agen.aclose()
        return piece

    assert asyncio.run(first_piece())
    # The model is free again straight away.
    assert local.generate_sync(MSG, GenerateParams(max_tokens=3, temperature=0.0)).text


def test_openai_compatible_backend_over_http():
    up = FakeUpstream("red, green and blue", piece=4)
    with serving(up.app) as url:
        b = create_backend("openai", model="fake", base_url=f"{url}/v1")
        assert b.generate_sync(MSG).text == "red, green and blue"
        assert "".join(b.stream_sync(MSG)) == "red, green and blue"
    assert up.calls == 2


def test_openai_backend_retries_429_then_succeeds():
    import httpx

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) < 3:
            return httpx.Response(429, json={"error": {"message": "slow down"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {}})

    from ccguard.llm.openai_compat import OpenAIBackend

    b = OpenAIBackend("m", base_url="http://test/v1", transport=httpx.MockTransport(handler), max_retries=4)
    assert asyncio.run(b.generate(MSG)).text == "ok"
    assert len(seen) == 3


def test_retries_honour_retry_after_and_give_up_with_a_clear_error():
    import httpx

    from ccguard.llm.http import MAX_RETRY_AFTER, UpstreamError, retry_after
    from ccguard.llm.openai_compat import OpenAIBackend

    answers = [httpx.Response(429, headers={"retry-after": "3"}), httpx.Response(503, headers={"retry-after-ms": "1500"}),
               httpx.Response(429, headers={"retry-after": "86400"}), httpx.Response(429, headers={"retry-after": "soon"}),
               httpx.Response(200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {}})]
    b = OpenAIBackend("m", base_url="http://test/v1", transport=httpx.MockTransport(lambda r: answers.pop(0)), max_retries=4)
    assert retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 -0000"})) == 0.0  # past, zone-less
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    b.sleep = record
    assert asyncio.run(b.generate(MSG)).text == "ok"
    # What the server asked for (bounded), then jittered exponential backoff when it says nothing readable.
    assert waits[:3] == [3.0, 1.5, MAX_RETRY_AFTER] and 0 <= waits[3] <= 8

    b = OpenAIBackend("m", base_url="http://test/v1", transport=httpx.MockTransport(lambda r: httpx.Response(429)), max_retries=2)
    b.sleep = record
    with pytest.raises(UpstreamError, match="429"):
        asyncio.run(b.generate(MSG))
    # A stream is retried the same way until the server answers with one.
    answers = [httpx.Response(429, headers={"retry-after": "2"}),
               httpx.Response(200, text='data: {"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n',
                              headers={"content-type": "text/event-stream"})]
    b = OpenAIBackend("m", base_url="http://test/v1", transport=httpx.MockTransport(lambda r: answers.pop(0)))
    waits.clear()
    b.sleep = record
    assert "".join(b.stream_sync(MSG)) == "hi" and waits == [2.0]
    b = OpenAIBackend("m", base_url="http://test/v1", transport=httpx.MockTransport(
        lambda r: httpx.Response(200, text="<html>nope</html>", headers={"content-type": "text/html"})))
    with pytest.raises(UpstreamError, match="event stream"):
        list(b.stream_sync(MSG))


def test_anthropic_backend_at_the_transport_layer():
    import json

    import httpx

    from ccguard.llm.anthropic import AnthropicBackend

    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"headers": dict(request.headers), "body": body})
        if body["stream"]:
            events = [
                {"type": "message_start", "message": {"id": "m"}},
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
                {"type": "message_stop"},
            ]
            sse = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
            return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={"content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
                                         "model": "claude-x", "usage": {"input_tokens": 5, "output_tokens": 1}})

    b = AnthropicBackend("claude-x", api_key="k", transport=httpx.MockTransport(handler))
    msgs = [Message(role="system", content="Be brief."), *MSG]
    out = asyncio.run(b.generate(msgs))
    assert out.text == "Hello" and out.usage.prompt_tokens == 5
    assert "".join(b.stream_sync(msgs)) == "Hello"
    first = seen[0]
    assert first["headers"]["x-api-key"] == "k" and first["headers"]["anthropic-version"]
    assert first["body"]["system"] == "Be brief." and all(m["role"] != "system" for m in first["body"]["messages"])


def test_rubric_grader_with_an_openai_judge_at_the_transport_layer():
    import json

    import httpx

    from ccguard.evaluate.rubric import grade
    from ccguard.llm.openai_compat import OpenAIBackend

    def handler(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][0]["content"]
        text = "1. Preheat the oven.\n2. Knead the dough.\n3. Bake until golden." if "Break the reference" in prompt else "COVERED: 1, 3"
        return httpx.Response(200, json={"choices": [{"message": {"content": text}, "finish_reason": "stop"}], "usage": {}})

    judge = OpenAIBackend("judge", base_url="http://test/v1", transport=httpx.MockTransport(handler))
    g = asyncio.run(grade(judge, "How do I bake bread?", "Preheat, knead, bake.", "Heat the oven and bake it."))
    assert g.covered == [1, 3] and abs(g.score - 2 / 3) < 1e-9 and len(g.points) == 3
