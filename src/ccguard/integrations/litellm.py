"""A LiteLLM guardrail: ccguard screens the request before the call, and the response after it or as it streams.

In the LiteLLM proxy's ``config.yaml``::

    guardrails:
      - guardrail_name: ccguard
        litellm_params:
          guardrail: ccguard.integrations.litellm.CcguardGuardrail
          mode: [pre_call, post_call]
          default_on: true

with ``CCGUARD_GUARD`` set to a guard directory or Hub repo id; in Python, ``litellm.callbacks =
[CcguardGuardrail(guard=Guard.load(...))]``.

- **pre_call**: a flagged request is rejected with HTTP 400 (``detail.error == "ccguard: request blocked"``, the
  verdict's score, threshold and category), before any upstream call. Text content parts are screened; a request with
  parts a text guard cannot read (images, audio, files) is rejected unless ``allow_unscreened`` is set.
- **post_call** (non-streaming): a flagged response is cut where the guard would have halted it, with
  ``finish_reason == "content_filter"``.
- **streaming**: each chunk is re-emitted with only the text the guard has released; at the first flagged chunk the
  stream ends with a ``content_filter`` chunk, and nothing from that chunk on is sent. Tool-call deltas are passed
  through unscreened; screen tool use with ``ccguard serve`` instead.
"""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import HTTPException

# LiteLLM fetches its model price list from GitHub at import unless told not to; ccguard never reaches out at run time.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
from litellm.integrations.custom_guardrail import CustomGuardrail  # noqa: E402

from ccguard.conversation import render_tool_calls, string_leaves, texts_of  # noqa: E402
from ccguard.guard import Guard  # noqa: E402
from ccguard.policy import Verdict  # noqa: E402


def _detail(message: str, v: Verdict) -> dict[str, Any]:
    return {"error": message, "score": round(v.score, 6), "threshold": round(v.threshold, 6), "category": v.category,
            "stage": v.stage, "unscreened": v.unscreened}


def _reject(message: str, v: Verdict | None = None) -> HTTPException:
    return HTTPException(status_code=400, detail=_detail(message, v) if v is not None else {"error": message})


def _choices(chunk: Any) -> list[Any]:
    return list(getattr(chunk, "choices", None) or [])


def _delta_text(chunk: Any) -> str:
    choices = _choices(chunk)
    delta = getattr(choices[0], "delta", None) if choices else None
    return (getattr(delta, "content", None) or "") if delta is not None else ""


def _finish(chunk: Any) -> Any:
    choices = _choices(chunk)
    return getattr(choices[0], "finish_reason", None) if choices else None


def _text_chunk(template: Any, text: str | None, finish: Any) -> Any:
    """A fresh chunk like ``template`` (id, model, created) whose only delta is ``text``: no role, no tool calls."""
    from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices

    return ModelResponseStream(
        id=getattr(template, "id", None), model=getattr(template, "model", None), created=getattr(template, "created", None),
        choices=[StreamingChoices(index=0, delta=Delta(content=text or None), finish_reason=finish)],
    )


def _released_chunk(chunk: Any, released: str) -> Any:
    """``chunk`` carrying only what may go out now: its role and the text released now. Its tool calls are held
    back (screened at the end), and reasoning, audio or anything else the guard does not read is dropped."""
    from litellm.types.utils import Delta

    out = copy.copy(chunk)
    choice = copy.copy(chunk.choices[0])
    choice.delta = Delta(content=released or None, role=getattr(chunk.choices[0].delta, "role", None))
    choice.finish_reason = None
    out.choices = [choice]
    return out


def _calls_of(chunk: Any) -> list[Any]:
    choices = _choices(chunk)
    delta = getattr(choices[0], "delta", None) if choices else None
    return list(getattr(delta, "tool_calls", None) or []) if delta is not None else []


def _merge_calls(deltas: list[Any]) -> list[dict[str, Any]]:
    """Streamed tool-call deltas joined into whole calls, in OpenAI's shape, by their index."""
    calls: dict[int, dict[str, Any]] = {}
    for d in deltas:
        c = calls.setdefault(getattr(d, "index", 0) or 0, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        c["id"] = getattr(d, "id", None) or c["id"]
        fn = getattr(d, "function", None)
        if fn is not None:
            c["function"]["name"] += getattr(fn, "name", None) or ""
            c["function"]["arguments"] += getattr(fn, "arguments", None) or ""
    return [calls[k] for k in sorted(calls)]


def _calls_chunk(template: Any, calls: list[dict[str, Any]]) -> Any:
    """One chunk that carries the screened tool calls whole."""
    from litellm.types.utils import (
        ChatCompletionDeltaToolCall,
        Delta,
        Function,
        ModelResponseStream,
        StreamingChoices,
    )

    deltas = [ChatCompletionDeltaToolCall(index=i, id=c["id"], type="function",
                                          function=Function(name=c["function"]["name"], arguments=c["function"]["arguments"]))
              for i, c in enumerate(calls)]
    return ModelResponseStream(
        id=getattr(template, "id", None), model=getattr(template, "model", None), created=getattr(template, "created", None),
        choices=[StreamingChoices(index=0, delta=Delta(content=None, tool_calls=deltas), finish_reason=None)],
    )


def _request_prompt(data: dict) -> list[dict[str, Any]] | None:
    """Everything in a LiteLLM request that the model will read, as chat messages for the guard: the messages, a
    text-completion ``prompt``, a Responses-API ``input`` and ``instructions``, a ``system`` field. None when the
    request carries no text (nothing to screen)."""
    msgs: list[dict[str, Any]] = []
    for key in ("system", "instructions"):
        if isinstance(data.get(key), str) and data[key]:
            msgs.append({"role": "system", "content": data[key]})
    for m in data.get("messages") or ():
        if isinstance(m, dict):
            msg = {k: v for k, v in m.items() if k in ("role", "content", "name", "tool_calls", "tool_call_id")}
            if isinstance(m.get("function_call"), dict):  # the legacy form of a tool call is read by the model too
                msg["tool_calls"] = [*(msg.get("tool_calls") or []), {"type": "function", "function": m["function_call"]}]
            msgs.append(msg)
        else:
            raise ValueError("each message must be an object")
    for key in ("prompt", "input"):
        value = data.get(key)
        items = [value] if isinstance(value, str | dict) else value if isinstance(value, list) else []
        if any(isinstance(i, int) or (isinstance(i, list) and i and isinstance(i[0], int)) for i in items):
            raise ValueError(f"'{key}' as token ids cannot be screened; send text")
        for item in items:
            if isinstance(item, dict) and "role" in item:  # a Responses-API message
                msgs.append(item)
            else:  # a string, or any other item (a tool output ...): every string in it is read by the model
                msgs += [{"role": "user", "content": t} for t in texts_of(string_leaves(item))]
    return msgs or None


class CcguardGuardrail(CustomGuardrail):
    """ccguard as a LiteLLM guardrail. ``guard``: a loaded ``Guard``, or a directory or Hub repo id (default: the
    ``CCGUARD_GUARD`` environment variable). ``allow_unscreened``: let requests with parts a text guard cannot read
    (images, audio, files) through, screening their text only."""

    use_native_lifecycle_hooks = True  # LiteLLM calls the hooks below, not its generic apply_guardrail path

    def __init__(self, guard: Guard | str | None = None, *, allow_unscreened: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("guardrail_name", "ccguard")
        super().__init__(**kwargs)
        if not isinstance(guard, Guard):
            ref = guard or os.environ.get("CCGUARD_GUARD")
            if not ref:
                raise ValueError("CcguardGuardrail needs a guard: pass guard=... or set CCGUARD_GUARD")
            guard = Guard.from_pretrained(ref)
        self.guard = guard
        self.allow_unscreened = allow_unscreened

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        if isinstance(data.get("n"), int | float) and data["n"] > 1:
            # Each choice would need its own stream gate; refusing is safer than mixing them.
            raise _reject("ccguard: n > 1 is not supported")
        try:
            prompt = _request_prompt(data)
            if prompt is None:
                return data
            v = await self.guard.acheck_input(prompt)
        except Exception as e:  # noqa: BLE001 - a malformed request is the client's 400, not a server error
            raise _reject(f"ccguard: bad request: {e}") from None
        if not v.allowed:
            raise _reject("ccguard: request blocked", v)
        if v.unscreened and not self.allow_unscreened:
            raise _reject("ccguard: content a text guard cannot screen: " + ", ".join(v.unscreened), v)
        return data

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict: Any, response: Any) -> Any:
        """A flagged answer is cut where the guard halts it; its tool calls, read as the proxy reads them (one
        '[call name] arguments' line each, after the text), are screened with it and dropped on a flag."""
        prompt = _request_prompt(data) or ""
        for choice in _choices(response):
            message = getattr(choice, "message", None)
            text = getattr(message, "content", None) or ""
            calls = [c if isinstance(c, dict) else c.model_dump() for c in (getattr(message, "tool_calls", None) or [])]
            screened = "\n".join(x for x in (text, render_tool_calls(calls)) if x)
            if not isinstance(text, str) or not screened:
                continue
            v = await self.guard.acheck_output(prompt, screened)
            if not v.allowed:
                message.content = text[: min(v.stop_char or 0, len(text))]
                if calls:
                    message.tool_calls = None
                choice.finish_reason = "content_filter"
        return response

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict: Any, response: Any,
                                                      request_data: dict) -> AsyncGenerator[Any, None]:
        """Each chunk goes out with only its role and the text the guard has released. Tool calls are held back and
        screened with the whole text at the end (as the proxy reads them), then sent whole; the finishing chunk and
        chunks without choices (usage) also wait for the end. Reasoning and audio deltas are not passed on."""
        prompt = _request_prompt(request_data) or ""
        last = finish = None  # the latest chunk with choices, and the finish reason held back
        trailing: list[Any] = []  # chunks without choices (usage), sent after the finish
        call_deltas: list[Any] = []
        text = ""
        async for x in self.guard.ascreen_items(prompt, response, _delta_text):
            if isinstance(x, Verdict):
                allowed = x.allowed
                calls = _merge_calls(call_deltas)
                if allowed and calls:
                    v = await self.guard.acheck_output(prompt, "\n".join(t for t in (text, render_tool_calls(calls)) if t))
                    allowed = v.allowed
                    if allowed and last is not None:
                        yield _calls_chunk(last, calls)
                if last is not None:
                    yield _text_chunk(last, None, (finish or "stop") if allowed else "content_filter")
                if allowed:
                    for chunk in trailing:
                        yield chunk
                return
            item, released = x
            text += released
            if item is None:  # the end of an unflagged stream: the text the last chunk held back
                if released and last is not None:
                    yield _text_chunk(last, released, None)
                continue
            if not _choices(item):
                trailing.append(item)
                continue
            last = item
            finish = _finish(item) or finish
            call_deltas += _calls_of(item)
            out = _released_chunk(item, released)
            if released or out.choices[0].delta.role:
                yield out
