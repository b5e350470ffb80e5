"""Streams a response through the output classifier: text and tool-call fragments both go into one output gate,
and a client delta is sent only once the gate has released the characters it carries.

The classifier reads tool calls as "[call name] arguments" lines, so a harmful payload in a tool call's arguments is
screened like text. Nothing from the flagged chunk on is ever sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Segment:
    start: int
    end: int
    kind: str  # 'text' | 'call_head' | 'call_args'
    index: int = 0  # tool-call index
    head: dict[str, Any] = field(default_factory=dict)  # id/type/name of a call, sent with its head
    text: str = ""


@dataclass
class Relay:
    """Per-stream bookkeeping: what was fed to the gate, and how much of it the client has been sent."""

    gate: Any  # an OutputGate, or None when the guard has no output classifier (everything passes at once)
    segments: list[_Segment] = field(default_factory=list)
    fed: int = 0  # characters fed to the gate
    sent: int = 0  # characters whose deltas the client has been sent

    def _add(self, text: str, seg: _Segment) -> str:
        seg.start, seg.end, seg.text = self.fed, self.fed + len(text), text
        self.fed = seg.end
        self.segments.append(seg)
        return text

    def text(self, piece: str) -> str:
        """Register a content piece; returns the text to feed the gate."""
        return self._add(piece, _Segment(0, 0, "text"))

    def tool_call(self, delta: dict[str, Any]) -> str:
        """Register a tool-call delta (OpenAI shape); returns the text to feed the gate."""
        index = int(delta.get("index") or 0)
        fn = delta.get("function") or {}
        out = ""
        if delta.get("id") or fn.get("name"):
            head = {"index": index, "type": "function", "function": {"name": fn.get("name") or "", "arguments": ""}}
            if delta.get("id"):
                head["id"] = delta["id"]
            out += self._add(f"\n[call {fn.get('name') or ''}] ", _Segment(0, 0, "call_head", index, head))
        args = fn.get("arguments") or ""
        if args:
            out += self._add(args, _Segment(0, 0, "call_args", index))
        return out

    def released(self) -> int:
        return self.fed if self.gate is None else self.gate.released_chars

    def deltas(self) -> list[dict[str, Any]]:
        """Client deltas for everything released since the last call, in order."""
        upto = self.released()
        if upto <= self.sent:
            return []
        out: list[dict[str, Any]] = []
        for seg in self.segments:
            if seg.end <= self.sent or seg.start >= upto:
                continue
            a, b = max(seg.start, self.sent), min(seg.end, upto)
            piece = seg.text[a - seg.start : b - seg.start]
            if seg.kind == "text":
                _merge(out, {"content": piece})
            elif seg.kind == "call_head":
                if b == seg.end:  # a call's head goes out whole, once its marker text is released
                    out.append({"tool_calls": [seg.head]})
                else:
                    upto = seg.start  # hold everything after an unreleased head
                    break
            else:
                out.append({"tool_calls": [{"index": seg.index, "function": {"arguments": piece}}]})
        self.sent = max(self.sent, upto)
        self.segments = [s for s in self.segments if s.end > self.sent]
        return out


def _merge(out: list[dict[str, Any]], delta: dict[str, Any]) -> None:
    if out and "content" in out[-1] and "content" in delta:
        out[-1]["content"] += delta["content"]
    else:
        out.append(delta)
