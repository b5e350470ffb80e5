"""Examples and their JSONL files, with atomic writes and group-aware splits."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ccguard.errors import CcguardError

Label = Literal["harmful", "harmless"]
# ``Example.source`` of both sides of a constitution's intent pairs: calibration reports their harmless sides apart.
PAIR_SOURCE = "pair"
CROSSED_SOURCE = "crossed"  # SeedBank.crossed_templates rows, both labels
Split = Literal["train", "val", "test"]
# Content-part types that carry text (chat completions' 'text'; the Responses API's 'input_text' and 'output_text').
TEXT_PARTS = ("text", "input_text", "output_text")


def content_text(content: Any, *, where: str = "content") -> tuple[str, list[str]]:
    """The text of an OpenAI-style message content (a string, None, or a list of content parts) and the types of its
    parts that are not text (images, audio, files), which a text guard cannot read. Text parts are joined as they
    come, with nothing between them, so a word split across two parts is read whole. A malformed part is an error
    naming it."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise CcguardError("must be a string or a list of content parts", where=where)
    texts: list[str] = []
    others: list[str] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or not kind:
            raise CcguardError("each content part must be an object with a 'type'", where=f"{where}[{i}]")
        if kind in TEXT_PARTS:
            if not isinstance(part.get("text"), str):
                raise CcguardError(f"a {kind!r} part needs a string 'text'", where=f"{where}[{i}]")
            texts.append(part["text"])
        else:
            others.append(kind[:64])
    return "".join(texts), others


class Message(BaseModel):
    """One chat message. ``content`` may be given as OpenAI-style content parts: the text parts become ``content``
    and the types of the others are kept in ``other_parts``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    role: str = Field(description="'system', 'developer', 'user', 'assistant' or 'tool'.")
    content: str = Field(description="The message text (the text parts, joined).")
    other_parts: tuple[str, ...] = Field(
        default=(), exclude=True,  # a runtime fact about a request; data files stay as they were
        description="Types of the content parts that are not text ('image_url', 'input_audio', 'file', "
        "...): a text guard cannot read them, and verdicts name them.")
    name: str | None = Field(default=None, description="Optional participant name (OpenAI's 'name').")
    tool_calls: list[dict[str, Any]] | None = Field(default=None, description="Assistant tool calls, in OpenAI's shape.")
    tool_call_id: str | None = Field(default=None, description="For a 'tool' message: the call it answers.")

    @model_validator(mode="before")
    @classmethod
    def _content_parts(cls, data: Any) -> Any:
        if isinstance(data, dict) and not isinstance(data.get("content", ""), str):
            try:
                text, others = content_text(data.get("content"))
            except CcguardError as e:  # a ValueError, so pydantic reports it with the record's location
                raise ValueError(str(e)) from None
            data = {**data, "content": text, "other_parts": tuple(data.get("other_parts") or ()) + tuple(others)}
        return data


Prompt = str | list[Message]


class Step(BaseModel):
    """One transform applied to an example: its registered name and the arguments it was built with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Registered transform name.")
    family: str = Field(description="Transform family (encoding, style, framing, structure, keyword, ...).")
    args: dict[str, Any] = Field(default_factory=dict, description="Factory arguments, so the step can be rebuilt.")


class Example(BaseModel):
    """A labelled training or evaluation example."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Unique, stable id (content-derived).")
    prompt: Prompt = Field(description="The user prompt: a string or a list of chat messages.")
    response: str | None = Field(default=None, description="Assistant response, for output-side examples.")
    label: Label = Field(description="Ground truth for the example as a whole.")
    category: str | None = Field(default=None, description="Constitution category id, or pool domain.")
    source: str = Field(description="Where the base text came from: seed, template, pool, redteam, ...")
    group: str = Field(description="Base-query group: all variants of one base share it and one split.")
    parent_id: str | None = Field(default=None, description="Id of the example this one was derived from.")
    base: str | None = Field(default=None, description="The base query text a transformed example wraps.")
    lineage: list[Step] = Field(default_factory=list, description="Transforms applied, in order.")
    split: Split | None = Field(default=None, description="train, val or test.")

    @property
    def family(self) -> str:
        """The transform families applied, joined with '+', or 'none'."""
        return "+".join(s.family for s in self.lineage) or "none"


def stable_id(*parts: str, n: int = 16) -> str:
    """A short hex id derived from content."""
    h = hashlib.sha256("\x1f".join(parts).encode("utf-8"))
    return h.hexdigest()[:n]


def render_prompt(prompt: Prompt) -> str:
    """The text a classifier reads for a prompt: plain text, or role-tagged chat turns (``Message`` objects or
    plain ``{"role", "content"}`` dicts, as the OpenAI SDK takes them)."""
    if isinstance(prompt, str):
        return prompt
    if not all(isinstance(m, Message) for m in prompt):
        prompt = parse_prompt(list(prompt), where="prompt")
    if len(prompt) == 1 and prompt[0].role == "user":
        # A lone user turn reads exactly like the plain-string prompt it is.
        return prompt[0].content
    return "\n".join(f"{m.role}: {m.content}" for m in prompt)


def parse_prompt(value: Any, *, where: str) -> Prompt:
    """Validate a JSON 'prompt' value: a string, or a list of {role, content} messages whose content may be
    OpenAI-style content parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        out = []
        for i, m in enumerate(value):
            if isinstance(m, Message):
                out.append(m)
                continue
            if isinstance(m, dict) and not isinstance(m.get("content", ""), str):
                try:
                    content_text(m.get("content"), where=f"prompt[{i}].content")
                except CcguardError as e:
                    raise CcguardError(f"field '{e.where}': {e.message}", where=where) from None
            try:
                out.append(Message.model_validate(m))
            except ValidationError as e:
                err = e.errors()[0]
                raise CcguardError(f"field 'prompt[{i}]': each message needs 'role' and 'content' ({err['msg']})",
                                   where=where) from None
        return out
    raise CcguardError("field 'prompt' must be a string or a list of chat messages", where=where)


def unscreened_parts(prompt: Prompt) -> list[str]:
    """Where the content parts of a prompt that a text guard cannot read sit, with their types:
    ``'prompt[1]: image_url'``. Empty for plain text."""
    out = []
    if not isinstance(prompt, str):
        for i, m in enumerate(parse_prompt(list(prompt), where="prompt")):
            out += [f"prompt[{i}]: {t}" for t in m.other_parts]
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see either the old or the new content, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: Path, rows: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Atomically write rows (models or dicts) as JSONL; return the count."""
    lines = []
    for r in rows:
        obj = r.model_dump(mode="json", exclude_none=True) if isinstance(r, BaseModel) else r
        lines.append(json.dumps(obj, ensure_ascii=False))
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a bad line is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise CcguardError("file not found", where=str(path))
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CcguardError(f"invalid JSON ({e.msg} at column {e.colno})", where=f"{path}:{n}") from None
            if not isinstance(obj, dict):
                raise CcguardError("each line must be a JSON object", where=f"{path}:{n}")
            yield n, obj


def read_examples(path: Path) -> list[Example]:
    """Read a JSONL file of Examples, naming the line of any malformed record."""
    out = []
    for n, obj in iter_jsonl(path):
        try:
            out.append(Example.model_validate(obj))
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "(record)"
            raise CcguardError(f"field {field!r}: {err['msg']}", where=f"{path}:{n}") from None
    return out


def assign_splits(
    examples: list[Example], *, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> list[Example]:
    """Give each example a split by hashing its group, so all variants of one base share a split."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError("split fractions must sum to 1")
    cut_train, cut_val = fractions[0], fractions[0] + fractions[1]
    out = []
    for ex in examples:
        u = int(stable_id(str(seed), ex.group, n=8), 16) / 0xFFFFFFFF
        split: Split = "train" if u < cut_train else "val" if u < cut_val else "test"
        out.append(ex.model_copy(update={"split": split}))
    return out


def half_harmful(rows: list[Example], n: int, seed: int) -> list[Example]:
    """Up to ``n`` rows, at most half of them harmful where the rows allow (harmful first, then harmless)."""
    import random

    rng = random.Random(seed)
    harmful = [r for r in rows if r.label == "harmful"]
    harmless = [r for r in rows if r.label != "harmful"]
    rng.shuffle(harmful)
    rng.shuffle(harmless)
    k = min(len(harmful), n // 2)
    return harmful[:k] + harmless[: n - k]
