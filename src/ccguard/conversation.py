"""What the input classifier reads of a conversation.

A conversation is screened as several texts (``screen_parts``), so that nothing in it is diluted and nothing earlier
poisons what comes later:
- the **newest request** (everything after the last assistant turn before the last user turn: the user turn, and any
  tool round trip or assistant prefill after it), preceded by up to ``CONTEXT_CHARS`` of the conversation, so that a
  request split over turns is read together;
- the **whole conversation**, when there are earlier turns;
- **each turn, and each tool call's arguments, on their own** (a system prompt or a tool result must not be diluted
  by the rest).

Texts made only of earlier turns are marked ``history``: the policy judges them ``history_margin`` logits more
strictly (``ccguard.policy.Policy.decide_input``). They were screened when they were new, and a long harmless
biology conversation must not block every later question; a blatant request hidden in them is still caught.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ccguard.records import Message, Prompt, parse_prompt, render_prompt

# How much of the earlier conversation is read with the newest request at the full threshold: about one window.
CONTEXT_CHARS = 600


class ScreenText(BaseModel):
    """One text the input classifier screens, and whether it is made only of earlier turns."""

    model_config = ConfigDict(frozen=True)
    text: str = Field(description="The text.")
    history: bool = Field(default=False, description="Earlier turns only: judged more strictly (history_margin).")


class ConversationText(BaseModel):
    """A conversation split where its newest request begins."""

    model_config = ConfigDict(frozen=True)
    new: str = Field(description="The newest request's turns, preceded by up to CONTEXT_CHARS of the conversation.")
    history: str | None = Field(description="The whole conversation, or None when there are no earlier turns.")


def render_tool_calls(calls: list[dict[str, Any]] | None) -> str:
    """Tool calls as the classifiers read them: one '[call name] arguments' line each."""
    lines = []
    for c in calls or ():
        fn = c.get("function") or {}
        lines.append(f"[call {fn.get('name', '')}] {fn.get('arguments', '')}")
    return "\n".join(lines)


def conversation_lines(messages: list[Message]) -> list[str]:
    """One line per turn: role (and name), then the text and any tool calls."""
    lines = []
    for m in messages:
        who = f"{m.role} ({m.name})" if m.name else m.role
        body = "\n".join(x for x in (m.content, render_tool_calls(m.tool_calls)) if x)
        lines.append(f"{who}: {body}")
    return lines


def render_conversation(messages: list[Message]) -> str:
    """The conversation the upstream will see, as text: system and developer turns, names, tool calls and tool
    results included. Plain turns read exactly as ``render_prompt`` renders them (a lone user turn as itself)."""
    if all(not (m.name or m.tool_calls or m.tool_call_id) for m in messages):
        return render_prompt(messages)
    return "\n".join(conversation_lines(messages))


def new_turns_start(messages: list[Message]) -> int:
    """Index of the newest request's first turn: after the last assistant turn before the last user turn (0 when
    there is none: all of it is new). Tool results and a trailing assistant prefill belong to the newest request."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None:
        return 0
    k = max((i for i, m in enumerate(messages[:last_user]) if m.role == "assistant"), default=None)
    return 0 if k is None else k + 1


def conversation_text(messages: list[Message], context_chars: int = CONTEXT_CHARS) -> ConversationText:
    """The newest request with the turns just before it, and the whole conversation when it has earlier turns."""
    start = new_turns_start(messages)
    if start == 0:
        return ConversationText(new=render_conversation(messages), history=None)
    lines = conversation_lines(messages)
    before = "\n".join(lines[:start])
    tail = before[-context_chars:]
    if len(before) > context_chars and " " in tail:
        tail = tail[tail.index(" ") + 1 :]  # start at a word
    return ConversationText(new=f"{tail}\n" + "\n".join(lines[start:]), history="\n".join(lines))


def string_leaves(value: Any) -> list[str]:
    """Every string in a JSON value, keys included (a schema can hide text in a property name)."""
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            out += [k for k in v if isinstance(k, str)]
            stack += list(v.values())
        elif isinstance(v, list):
            stack += v
    return out[::-1]


def texts_of(strings: list[str], min_alone: int = 24) -> list[str]:
    """Longer strings on their own (so that nothing dilutes them), the short ones together."""
    alone = [x for x in strings if len(x) >= min_alone]
    short = " ".join(x for x in strings if 0 < len(x) < min_alone)
    return alone + ([short] if short else [])


def unique(texts: list[ScreenText]) -> list[ScreenText]:
    """One entry per text, in order; a text that is also new content is judged as new."""
    best: dict[str, ScreenText] = {}
    for t in texts:
        if t.text.strip() and (t.text not in best or best[t.text].history):
            best[t.text] = t
    return list(best.values()) or texts[:1]


def screen_parts(prompt: Prompt) -> list[ScreenText]:
    """The texts the input classifier screens for a prompt (see the module docstring). A plain string, or a lone
    user turn, is one text, exactly as before conversations were split."""
    if isinstance(prompt, str):
        return [ScreenText(text=prompt)]
    if not all(isinstance(m, Message) for m in prompt):
        prompt = parse_prompt(list(prompt), where="prompt")
    conv = conversation_text(prompt)
    out = [ScreenText(text=conv.new)]
    if conv.history is not None:
        out.append(ScreenText(text=conv.history, history=True))
    # Each turn alone too (a lone plain user turn is the same text as the whole, and is kept once).
    start = new_turns_start(prompt)
    for i, m in enumerate(prompt):
        old = i < start
        if m.content:
            out.append(ScreenText(text=m.content, history=old))
        for c in m.tool_calls or ():
            args = (c.get("function") or {}).get("arguments") or ""
            try:
                out += [ScreenText(text=t, history=old) for t in texts_of(string_leaves(json.loads(args)))]
            except ValueError:
                out.append(ScreenText(text=args, history=old))
    return unique(out)
