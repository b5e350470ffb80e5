"""The chat-completions request as the proxy accepts it: strict types, bounded sizes, and the text of every field
that reaches the upstream, so that all of it is screened.

Only fields in :data:`FORWARDED` go upstream besides the messages and sampling parameters; anything else a client
sends is dropped, because text in an unknown field could reach the model unscreened.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ccguard.conversation import ScreenText, screen_parts, string_leaves, texts_of, unique
from ccguard.records import Message

# Fields passed through to the upstream as they are (their text is screened by :func:`screen_texts`).
FORWARDED = (
    "tools", "tool_choice", "parallel_tool_calls", "response_format", "presence_penalty", "frequency_penalty",
    "logit_bias", "logprobs", "top_logprobs", "user",
)  # fmt: skip
INT64 = 2**63


class TextPart(BaseModel):
    """A text content part."""

    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"] = Field(description="Always 'text'.")
    text: str = Field(max_length=1_000_000, description="The text.")


class OtherPart(BaseModel):
    """Any other content part (image, audio, file): named in the error, since a text guard cannot screen it."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(max_length=64, description="The part's type.")


class ToolFunction(BaseModel):
    """A function the model may call."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64, description="Function name.")
    description: str | None = Field(default=None, max_length=100_000, description="What the function does.")
    parameters: dict[str, Any] | None = Field(default=None, description="JSON Schema of its arguments.")
    strict: bool | None = Field(default=None, description="Strict schema adherence.")


class Tool(BaseModel):
    """A tool definition."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["function"] = Field(description="Always 'function'.")
    function: ToolFunction = Field(description="The function.")


class CallFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64, description="Function called.")
    arguments: str = Field(max_length=1_000_000, description="Arguments as a JSON string.")


class ToolCall(BaseModel):
    """A tool call made by the assistant in an earlier turn."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(max_length=256, description="Call id.")
    type: Literal["function"] = Field(default="function", description="Always 'function'.")
    function: CallFunction = Field(description="The call.")


class ChatMessage(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(description="Who speaks.")
    content: str | list[TextPart | OtherPart] | None = Field(default=None, description="Text or content parts.")
    name: str | None = Field(default=None, max_length=64, description="Participant name.")
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=128, description="Assistant tool calls.")
    tool_call_id: str | None = Field(default=None, max_length=256, description="The call a tool message answers.")

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        others = [p.type for p in self.content if not isinstance(p, TextPart)]
        if others:
            raise ValueError(f"content part type {others[0]!r} is not supported: the proxy screens text only")
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


class ChatRequest(BaseModel):
    """POST /v1/chat/completions."""

    model_config = ConfigDict(extra="allow")
    model: str | None = Field(default=None, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = Field(default=None)
    seed: int | None = Field(default=None, ge=-INT64, lt=INT64)
    n: int | None = Field(default=None, ge=1, le=128)
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(default=None, max_length=1024)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = Field(default=None, max_length=256)

    def stops(self) -> list[str] | None:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        if stops is not None and (len(stops) > 4 or any(len(s) > 256 for s in stops)):
            raise ValueError("stop: at most 4 sequences of at most 256 characters")
        return stops or None

    def to_messages(self) -> list[Message]:
        """The conversation as the backends take it (tool calls and tool results kept)."""
        out = []
        for m in self.messages:
            calls = [c.model_dump(mode="json") for c in m.tool_calls] if m.tool_calls else None
            out.append(Message(role=m.role, content=m.text(), name=m.name, tool_calls=calls, tool_call_id=m.tool_call_id))
        return out

    def forwarded(self) -> dict[str, Any]:
        """The allowed extra fields that were set, in wire form."""
        return {k: v for k, v in self.model_dump(mode="json", include=set(FORWARDED), exclude_none=True).items()}

    def dropped(self) -> list[str]:
        """Names of unknown fields the client sent; they are not forwarded."""
        return sorted((self.model_extra or {}).keys())


def screen_texts(req: ChatRequest, messages: list[Message]) -> list[ScreenText]:
    """Every text the upstream will read, so that all of it is screened: the conversation's parts (see
    ``ccguard.conversation.screen_parts``: the newest request with the turns just before it, the whole conversation,
    each turn and tool call on its own, earlier turns marked ``history``); each tool's description and the strings
    of its parameter schema; the response-format schema and a named tool choice."""
    extra: list[str] = []
    for t in req.tools or ():
        f = t.function
        extra += texts_of([f.name, f.description or "", *string_leaves(f.parameters or {})])
    extra += texts_of(string_leaves(req.response_format or {}))
    extra += texts_of(string_leaves(req.tool_choice if isinstance(req.tool_choice, dict) else {}))
    return unique([*screen_parts(messages), *(ScreenText(text=t) for t in extra)])
