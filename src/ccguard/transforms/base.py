"""Transform protocol, context and composition.

A transform is built by a registered factory whose keyword arguments are recorded in each example's lineage, so a
dataset can be rebuilt from its records. Transforms act on a prompt: a string, or chat messages (then on the last
user turn, unless the transform restructures the chat itself).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ccguard.records import Message, Prompt, Step, render_prompt
from ccguard.registry import REGISTRY


class JailbreakTemplate(BaseModel):
    """A jailbreak-style wrapper with one ``{payload}`` slot."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Short identifier.")
    text: str = Field(description="Template text containing {payload} once.")


class Framings(BaseModel):
    """Bundled framing material: original jailbreak-style templates and frames (no harmful content)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    jailbreak_templates: list[JailbreakTemplate] = Field(description="In-the-wild-style templates.")
    personas: list[str] = Field(description="System-prompt personas.")
    roleplay: list[str] = Field(description="Role-play frames with {payload}.")
    hypothetical: list[str] = Field(description="Hypothetical or fiction frames with {payload}.")
    research_pretext: list[str] = Field(description="Research-pretext frames with {payload}.")
    prefix_injection: list[str] = Field(description="Prefix-injection frames with {payload}.")
    refusal_suppression: list[str] = Field(description="Refusal-suppression frames with {payload}.")
    developer_mode: list[str] = Field(description="Developer-mode frames with {payload}.")


def load_framings() -> Framings:
    """The bundled framing material."""
    text = (resources.files("ccguard") / "data" / "framings.yaml").read_text(encoding="utf-8")
    return Framings.model_validate(yaml.safe_load(text))


@dataclass(frozen=True)
class TransformContext:
    """What a transform may draw on besides its arguments. Carries the RNG; nothing here is mutated."""

    rng: random.Random
    terms: tuple[str, ...] = ()
    pool: tuple[tuple[str, str], ...] = ()
    framings: Framings | None = None


@dataclass(frozen=True)
class Transform:
    """A built transform. ``fn`` maps text to text (or to chat messages for structural transforms)."""

    name: str
    family: str
    args: dict[str, Any]
    fn: Callable[[str, TransformContext], Prompt]
    chat_aware: bool = False
    reversible: bool = field(default=False)

    @property
    def step(self) -> Step:
        return Step(name=self.name, family=self.family, args=self.args)

    def __call__(self, prompt: Prompt, ctx: TransformContext) -> Prompt:
        if isinstance(prompt, str):
            return self.fn(prompt, ctx)
        if self.chat_aware:
            return self.fn(render_prompt(prompt), ctx)
        # Apply to the last user turn; keep the rest of the conversation.
        msgs = list(prompt)
        for i in range(len(msgs) - 1, -1, -1):
            if msgs[i].role == "user":
                out = self.fn(msgs[i].content, ctx)
                if isinstance(out, str):
                    msgs[i] = Message(role="user", content=out)
                    return msgs
                return msgs[:i] + list(out) + msgs[i + 1 :]
        return msgs


def build(name: str, **args: Any) -> Transform:
    """Build a registered transform with recorded arguments."""
    if name not in REGISTRY.names("transform") and name in REGISTRY.names("llm_transform"):
        from ccguard.errors import CcguardError

        raise CcguardError(f"transform {name!r} needs an LLM backend (see ccguard.transforms.llm.llm_augment)")
    t = REGISTRY.get("transform", name).factory(**args)
    if not isinstance(t, Transform):
        raise TypeError(f"transform factory {name!r} must return a Transform")
    return t


def transform(name: str, family: str, *, reversible: bool = False, chat_aware: bool = False):
    """Decorator for simple text transforms: ``fn(text, ctx, **args) -> Prompt`` becomes a registered factory."""

    def deco(fn: Callable[..., Prompt]) -> Callable[..., Transform]:
        def factory(**args: Any) -> Transform:
            return Transform(
                name=name,
                family=family,
                args=dict(args),
                fn=lambda text, ctx: fn(text, ctx, **args),
                chat_aware=chat_aware,
                reversible=reversible,
            )

        factory.__doc__ = fn.__doc__
        factory.__name__ = fn.__name__
        REGISTRY.register("transform", name, family=family, reversible=reversible)(factory)
        return factory

    return deco


def compose(prompt: Prompt, transforms: Sequence[Transform], ctx: TransformContext) -> Prompt:
    """Apply transforms in order."""
    for t in transforms:
        prompt = t(prompt, ctx)
    return prompt


def pick(ctx: TransformContext, options: Sequence[str]) -> str:
    return options[ctx.rng.randrange(len(options))]


def fill(frame: str, payload: str) -> str:
    # str.replace, not str.format: frames and payloads may contain braces.
    return frame.replace("{payload}", payload, 1)
