"""A LangChain ``Runnable`` that guards a chat model (or any runnable that takes chat input and returns a message):
the input is screened before the model runs, the output as it streams.

    from langchain_openai import ChatOpenAI
    from ccguard import Guard
    from ccguard.integrations.langchain import CcguardRunnable

    guarded = CcguardRunnable(ChatOpenAI(model="..."), Guard.from_pretrained("runs/cbrn/guard"))
    chain = prompt | guarded | StrOutputParser()

Input is what chat models take: a string, a list of messages (LangChain messages, ``(role, text)`` tuples or OpenAI
dicts; content parts included), or a ``PromptValue``. A blocked input is answered with the guard's refusal, a blocked
output is cut where the guard halted it; either way the message's ``response_metadata`` has ``finish_reason:
"content_filter"`` and the verdict under ``"ccguard"``. With ``on_block="raise"`` both raise :class:`Blocked`
instead. Streaming releases only text the guard has scored, and nothing from the flagged chunk on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig

from ccguard.conversation import render_tool_calls
from ccguard.guard import Guard
from ccguard.policy import Verdict

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool",
          "developer": "developer", "chat": "user"}


class Blocked(Exception):  # noqa: N818 - reads as `except Blocked`
    """Raised with ``on_block="raise"``: the guard blocked the input or the output. ``verdict`` says why."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        super().__init__(f"ccguard blocked the {verdict.stage} (score {verdict.score:.4f} > {verdict.threshold:.4f})")


def to_prompt(value: Any) -> list[dict[str, Any]]:
    """LangChain chat input as OpenAI-style messages, content parts kept."""
    if isinstance(value, PromptValue):
        messages = value.to_messages()
    elif isinstance(value, str):
        messages = convert_to_messages([("human", value)])
    elif isinstance(value, list | tuple):
        messages = convert_to_messages(list(value))
    else:
        raise TypeError(f"CcguardRunnable takes chat input (a string, messages or a PromptValue), not {type(value).__name__}; "
                        "put the prompt template before it: prompt | CcguardRunnable(model, guard)")
    out = []
    for m in messages:
        msg: dict[str, Any] = {"role": _ROLES.get(m.type, "user"), "content": _content(m.content)}
        calls = getattr(m, "tool_calls", None)
        if calls:  # earlier tool calls are read by the model: their arguments are screened too
            msg["tool_calls"] = [{"type": "function", "function": {"name": c.get("name", ""), "arguments": json.dumps(c.get("args", {}))}}
                                 for c in calls]
        out.append(msg)
    return out


def _content(content: Any) -> Any:
    if isinstance(content, list):  # LangChain allows bare strings among the parts
        return [{"type": "text", "text": p} if isinstance(p, str) else p for p in content]
    return content


def _text(chunk: Any) -> str:
    c = getattr(chunk, "content", chunk)
    if isinstance(c, str):
        return c
    return "".join(p if isinstance(p, str) else p.get("text", "") for p in c if isinstance(p, str | dict)
                   and (isinstance(p, str) or p.get("type") in ("text", "output_text")))


def _meta(v: Verdict) -> dict[str, Any]:
    return {"finish_reason": "content_filter", "ccguard": v.model_dump(mode="json")}


class CcguardRunnable(Runnable[Any, BaseMessage]):
    """Wraps ``runnable`` (a chat model, or anything with chat input and message output) with ``guard``."""

    def __init__(self, runnable: Runnable[Any, Any], guard: Guard, *,
                 on_block: Literal["refuse", "raise"] = "refuse", allow_unscreened: bool = False) -> None:
        if on_block not in ("refuse", "raise"):
            raise ValueError(f"on_block must be 'refuse' or 'raise', not {on_block!r}")
        self.runnable, self.guard, self.on_block = runnable, guard, on_block
        self.allow_unscreened = allow_unscreened

    def _input(self, v: Verdict) -> tuple[Verdict, str]:
        """The input verdict as this runnable applies it (parts a text guard cannot read block unless allowed),
        and the text to answer a blocked request with."""
        if v.allowed and v.unscreened and not self.allow_unscreened:
            return v.model_copy(update={"allowed": False}), (
                "This request contains content that the guard cannot screen: " + ", ".join(v.unscreened) + ".")
        return v, self.guard.refusal

    def _blocked(self, v: Verdict, text: str, chunk: bool = False) -> BaseMessage:
        if self.on_block == "raise":
            raise Blocked(v)
        cls = AIMessageChunk if chunk else AIMessage
        return cls(content=text, response_metadata=_meta(v))

    def _finished(self, out: Any, v: Verdict, text: str) -> BaseMessage:
        if not v.allowed:  # cut where the guard halted, tool calls dropped
            return self._blocked(v, text[: min(v.stop_char or 0, len(text))])
        return out if isinstance(out, BaseMessage) else AIMessage(content=text)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        prompt = to_prompt(input)
        v, refusal = self._input(self.guard.check_input(prompt))
        if not v.allowed:
            return self._blocked(v, refusal)
        out = self.runnable.invoke(input, config, **kwargs)
        text = _text(out)
        return self._finished(out, self.guard.check_output(prompt, _screened(text, _calls(out))), text)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        prompt = to_prompt(input)
        v, refusal = self._input(await self.guard.acheck_input(prompt))
        if not v.allowed:
            return self._blocked(v, refusal)
        out = await self.runnable.ainvoke(input, config, **kwargs)
        text = _text(out)
        return self._finished(out, await self.guard.acheck_output(prompt, _screened(text, _calls(out))), text)

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[BaseMessage]:
        prompt = to_prompt(input)
        v, refusal = self._input(self.guard.check_input(prompt))
        if not v.allowed:
            yield self._blocked(v, refusal, chunk=True)
            return
        state = _Stream()
        for x in self.guard.screen_items(prompt, self.runnable.stream(input, config, **kwargs), _text):
            if isinstance(x, Verdict) and x.allowed and state.calls:
                x = self.guard.check_output(prompt, state.screened())
            if (out := self._emit(x, state)) is not None:
                yield out

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[BaseMessage]:
        prompt = to_prompt(input)
        v, refusal = self._input(await self.guard.acheck_input(prompt))
        if not v.allowed:
            yield self._blocked(v, refusal, chunk=True)
            return
        state = _Stream()
        async for x in self.guard.ascreen_items(prompt, self.runnable.astream(input, config, **kwargs), _text):
            if isinstance(x, Verdict) and x.allowed and state.calls:
                x = await self.guard.acheck_output(prompt, state.screened())
            if (out := self._emit(x, state)) is not None:
                yield out

    def _emit(self, x: tuple[Any, str] | Verdict, state: _Stream) -> BaseMessage | None:
        """A chunk as it goes out: the text released now, with the chunk's usage and metadata. Tool-call chunks are
        held back and go out whole once the text and the calls together were screened (the final verdict); other
        extra fields (reasoning) are not passed on. None when there is nothing to send."""
        if isinstance(x, Verdict):
            if not x.allowed:
                return self._blocked(x, "", chunk=True)
            return AIMessageChunk(content="", tool_call_chunks=state.calls) if state.calls else None
        item, released = x
        state.text += released
        if not isinstance(item, AIMessageChunk):
            return AIMessageChunk(content=released) if released else None
        state.calls += list(item.tool_call_chunks)
        if released or item.usage_metadata or item.response_metadata:
            return AIMessageChunk(content=released, id=item.id, usage_metadata=item.usage_metadata,
                                  response_metadata=item.response_metadata)
        return None


class _Stream:
    """One stream's text released so far and the tool-call chunks held back."""

    def __init__(self) -> None:
        self.text = ""
        self.calls: list[Any] = []

    def screened(self) -> str:
        """The text and the joined tool calls, as the guard reads a response (see ccguard.conversation)."""
        merged: dict[Any, dict[str, str]] = {}
        for c in self.calls:
            m = merged.setdefault(c.get("index"), {"name": "", "arguments": ""})
            m["name"] += c.get("name") or ""
            m["arguments"] += c.get("args") or ""
        return _screened(self.text, [{"function": m} for m in merged.values()])


def _calls(out: Any) -> list[dict[str, Any]]:
    """A message's tool calls in OpenAI's shape."""
    return [{"function": {"name": c.get("name", ""), "arguments": json.dumps(c.get("args", {}))}}
            for c in (getattr(out, "tool_calls", None) or [])]


def _screened(text: str, calls: list[dict[str, Any]]) -> str:
    return "\n".join(t for t in (text, render_tool_calls(calls)) if t)
