"""Conversation-level input screening: where the newest request begins, and how the policy weighs earlier turns."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ccguard.conversation import CONTEXT_CHARS, ScreenText, conversation_text, new_turns_start, screen_parts
from ccguard.policy import Policy, discounted
from ccguard.records import Message


def _m(role: str, content: str = "x", **kw) -> Message:
    return Message(role=role, content=content, **kw)


@pytest.mark.parametrize(("roles", "start"), [
    (["user"], 0),
    (["system", "user"], 0),
    (["user", "assistant", "user"], 2),
    (["system", "user", "assistant", "user", "assistant", "user"], 5),
    (["user", "assistant", "tool"], 0),  # the first request's tool round trip: all new
    (["user", "assistant", "user", "assistant", "tool"], 2),  # the tool call and its result belong to the newest request
    (["user", "assistant", "user", "assistant"], 2),  # a trailing assistant prefill is new
    (["system"], 0),
])
def test_new_turns_start(roles, start):
    assert new_turns_start([_m(r) for r in roles]) == start


def test_the_newest_request_is_read_with_the_turns_just_before_it():
    long_answer = " ".join(f"word{i}" for i in range(400))
    msgs = [_m("user", "first question"), _m("assistant", long_answer), _m("user", "and then?")]
    t = conversation_text(msgs)
    assert t.history == f"user: first question\nassistant: {long_answer}\nuser: and then?"
    assert t.new.endswith("\nuser: and then?") and "first question" not in t.new
    context = t.new[: -len("\nuser: and then?")]
    assert len(context) <= CONTEXT_CHARS and context.startswith("word") and long_answer.endswith(context)
    # A short conversation fits whole into the newest request's context.
    short = conversation_text([_m("user", "hi"), _m("assistant", "hello"), _m("user", "bye")])
    assert short.new == "user: hi\nassistant: hello\nuser: bye" == short.history
    # A first request has no history.
    assert conversation_text([_m("system", "be brief"), _m("user", "hi")]) == conversation_text(
        [_m("system", "be brief"), _m("user", "hi")]).model_copy(update={"new": "system: be brief\nuser: hi", "history": None})


def test_what_a_prompt_is_screened_as():
    # A plain prompt, or a lone user turn, is one text, exactly as before.
    assert screen_parts("hi") == [ScreenText(text="hi")] == screen_parts([{"role": "user", "content": "hi"}])
    # A first request: the whole, and each turn on its own, all new.
    assert screen_parts([_m("system", "be brief"), _m("user", "hi")]) == [
        ScreenText(text="system: be brief\nuser: hi"), ScreenText(text="be brief"), ScreenText(text="hi")]
    # Later: the newest request with context, the whole as history, each turn with its own flag, tool-call arguments.
    call = {"id": "c", "type": "function", "function": {"name": "lookup", "arguments": '{"query": "a long enough tool argument"}'}}
    msgs = [_m("user", "first"), _m("assistant", "", tool_calls=[call]), _m("tool", "result", tool_call_id="c"),
            _m("assistant", "answer"), _m("user", "second")]
    got = {t.text: t.history for t in screen_parts(msgs)}
    # (The conversation is short, so the newest request's context holds all of it: the whole is one new text.)
    assert got == {
        "user: first\nassistant: [call lookup] {\"query\": \"a long enough tool argument\"}\ntool: result\nassistant: answer\nuser: second": False,
        "first": True, "a long enough tool argument": True, "query": True, "result": True, "answer": True, "second": False,
    }
    # A text that is both new and earlier (the same words asked again) is judged as new.
    again = screen_parts([_m("user", "same words"), _m("assistant", "ok"), _m("user", "same words")])
    assert ScreenText(text="same words") in again


@dataclass
class _Score:
    score: float
    category: str | None


def test_history_is_judged_more_strictly_and_never_less():
    p = Policy(input_threshold=0.9, history_margin=2.0)
    assert discounted(0.9, 0.0) == pytest.approx(0.9) and discounted(0.5, 2.0) == pytest.approx(0.1192, abs=1e-4)
    # A borderline earlier turn (above the threshold alone) no longer blocks a harmless new question ...
    v = p.decide_input([_Score(0.05, None)], [_Score(0.95, "agent_synthesis")])
    assert v.allowed and v.score == pytest.approx(discounted(0.95, 2.0))
    # ... a blatant one still does, with its category ...
    v = p.decide_input([_Score(0.05, None)], [_Score(0.6, None), _Score(0.9995, "agent_synthesis")])
    assert not v.allowed and v.category == "agent_synthesis"
    # ... and the newest request is judged at the full threshold whatever the history says.
    v = p.decide_input([_Score(0.3, None), _Score(0.95, "weaponization")], [_Score(0.2, None)])
    assert not v.allowed and v.category == "weaponization" and v.score == 0.95
    # With margin 0 the conversation is judged as one text.
    assert not Policy(input_threshold=0.9, history_margin=0.0).decide_input([_Score(0.05, None)], [_Score(0.95, "x")]).allowed
    with pytest.raises(ValueError):
        p.decide_input([], [])
