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

from ccguard.guard import Guard  # noqa: E402
from ccguard.policy import Verdict  # noqa: E402


def _detail(message: str, v: Verdict) -> dict[str, Any]:
    return {"error": message, "score": round(v.score, 6), "threshold": round(v.threshold, 6), "category": v.category,
            "stage": v.stage, "unscreened": v.unscreened}


def _delta_text(chunk: Any) -> str:
    choices = getattr(chunk, "choices", None) or []
    delta = getattr(choices[0], "delta", None) if choices else None
    return (getattr(delta, "content", None) or "") if delta is not None else ""


class CcguardGuardrail(CustomGuardrail):
    """ccguard as a LiteLLM guardrail. ``guard``: a loaded ``Guard``, or a directory or Hub repo id (default: the
    ``CCGUARD_GUARD`` environment variable)."""

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
        messages = data.get("messages")
        if not messages:
            return data
        try:
            v = await self.guard.acheck_input(messages)
        except Exception as e:  # noqa: BLE001 - a malformed request is the client's 400, not a server error
            raise HTTPException(status_code=400, detail={"error": f"ccguard: bad request: {e}"}) from None
        if not v.allowed:
            raise HTTPException(status_code=400, detail=_detail("ccguard: request blocked", v))
        if v.unscreened and not self.allow_unscreened:
            raise HTTPException(status_code=400, detail=_detail(
                "ccguard: content a text guard cannot screen: " + ", ".join(v.unscreened), v))
        return data

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict: Any, response: Any) -> Any:
        choices = getattr(response, "choices", None) or []
        for choice in choices:
            message = getattr(choice, "message", None)
            text = getattr(message, "content", None)
            if not isinstance(text, str) or not text:
                continue
            v = await self.guard.acheck_output(data.get("messages") or "", text)
            if not v.allowed:
                message.content = text[: v.stop_char or 0]
                choice.finish_reason = "content_filter"
        return response

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict: Any, response: Any,
                                                      request_data: dict) -> AsyncGenerator[Any, None]:
        last = finish = None  # the latest chunk, and the finishing chunk held back until the guard is done
        async for x in self.guard.ascreen_items(request_data.get("messages") or "", response, _delta_text):
            if isinstance(x, Verdict):
                if not x.allowed and last is not None:
                    yield _with_text(last, "", finish="content_filter")
                elif finish is not None:
                    yield finish
                return
            item, released = x
            if item is None:  # the end of an unflagged stream: the text the last chunk held back
                if released and last is not None:
                    yield _with_text(last, released, finish=None)
                continue
            last = item
            if released or not _delta_text(item) and _finish(item) is None or _has_other_delta(item):
                yield _with_text(item, released, finish=None)
            if _finish(item) is not None:
                finish = _with_text(item, "", finish=_finish(item))


def _finish(chunk: Any) -> Any:
    choices = getattr(chunk, "choices", None) or []
    return getattr(choices[0], "finish_reason", None) if choices else None


def _has_other_delta(chunk: Any) -> bool:
    choices = getattr(chunk, "choices", None) or []
    delta = getattr(choices[0], "delta", None) if choices else None
    return bool(delta is not None and (getattr(delta, "tool_calls", None) or getattr(delta, "role", None)))


def _with_text(chunk: Any, text: str, *, finish: Any) -> Any:
    out = copy.deepcopy(chunk)
    if out.choices:
        out.choices[0].delta.content = text or None
        out.choices[0].finish_reason = finish
    return out
