"""The stream relay maps what the output gate has released back to client deltas, text and tool calls alike."""

from __future__ import annotations

from dataclasses import dataclass

from ccguard.server.relay import Relay


@dataclass
class Released:
    """What the relay reads of an output gate: how many fed characters may go out."""

    released_chars: int = 0


def test_text_and_tool_calls_go_out_only_as_far_as_released():
    s = Released()
    r = Relay(s)
    fed = r.text("Hello ") + r.text("world. ")
    fed += r.tool_call({"index": 0, "id": "c1", "type": "function", "function": {"name": "get", "arguments": ""}})
    fed += r.tool_call({"index": 0, "function": {"arguments": '{"a": '}})
    fed += r.tool_call({"index": 0, "function": {"arguments": "1}"}})
    assert fed == 'Hello world. \n[call get] {"a": 1}'
    s.released_chars = 8
    assert r.deltas() == [{"content": "Hello wo"}]
    s.released_chars = 16  # inside the call's marker: the head is held back, and nothing after it goes out
    assert r.deltas() == [{"content": "rld. "}]
    s.released_chars = len(fed) - 1
    got = r.deltas()
    assert got[0]["tool_calls"][0]["id"] == "c1" and got[0]["tool_calls"][0]["function"]["name"] == "get"
    assert got[1] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": '}}]}
    assert got[2] == {"tool_calls": [{"index": 0, "function": {"arguments": "1"}}]}
    s.released_chars = len(fed)
    assert r.deltas() == [{"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}]
    assert r.deltas() == []


def test_without_a_gate_everything_passes_at_once():
    r = Relay(None)
    r.text("abc")
    r.tool_call({"index": 1, "id": "x", "function": {"name": "f", "arguments": "{}"}})
    out = r.deltas()
    assert out[0] == {"content": "abc"} and out[1]["tool_calls"][0]["index"] == 1
    assert out[2] == {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}
