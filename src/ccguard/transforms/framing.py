"""Framings: personas, role-play, fiction, pretexts, prefix injection, refusal suppression, developer mode and
in-the-wild-style jailbreak templates. The frames live in ``data/framings.yaml`` and carry no harmful content."""

from __future__ import annotations

from ccguard.records import Message, Prompt
from ccguard.transforms.base import TransformContext, fill, pick, transform


def _frames(ctx: TransformContext, field: str) -> list[str]:
    if ctx.framings is None:
        raise ValueError("framing transforms need TransformContext.framings")
    return getattr(ctx.framings, field)


@transform("system_persona", "framing")
def system_persona(text: str, ctx: TransformContext) -> Prompt:
    """Put a persona in a system message ahead of the request."""
    return [Message(role="system", content=pick(ctx, _frames(ctx, "personas"))), Message(role="user", content=text)]


@transform("roleplay", "framing")
def roleplay(text: str, ctx: TransformContext) -> str:
    """Wrap the request in a role-play frame."""
    return fill(pick(ctx, _frames(ctx, "roleplay")), text)


@transform("hypothetical", "framing")
def hypothetical(text: str, ctx: TransformContext) -> str:
    """Wrap the request in a hypothetical or fictional frame."""
    return fill(pick(ctx, _frames(ctx, "hypothetical")), text)


@transform("research_pretext", "framing")
def research_pretext(text: str, ctx: TransformContext) -> str:
    """Claim a research or professional reason for the request."""
    return fill(pick(ctx, _frames(ctx, "research_pretext")), text)


@transform("prefix_injection", "framing")
def prefix_injection(text: str, ctx: TransformContext) -> str:
    """Tell the model how its answer must begin."""
    return fill(pick(ctx, _frames(ctx, "prefix_injection")), text)


@transform("refusal_suppression", "framing")
def refusal_suppression(text: str, ctx: TransformContext) -> str:
    """Add rules that forbid refusals, warnings and disclaimers."""
    return fill(pick(ctx, _frames(ctx, "refusal_suppression")), text)


@transform("developer_mode", "framing")
def developer_mode(text: str, ctx: TransformContext) -> str:
    """Claim a developer, debug or god mode with no restrictions."""
    return fill(pick(ctx, _frames(ctx, "developer_mode")), text)


@transform("jailbreak_template", "framing")
def jailbreak_template(text: str, ctx: TransformContext) -> str:
    """Embed the request in a long in-the-wild-style jailbreak template (DAN, dual response, simulators, ...)."""
    if ctx.framings is None:
        raise ValueError("framing transforms need TransformContext.framings")
    tpl = ctx.framings.jailbreak_templates[ctx.rng.randrange(len(ctx.framings.jailbreak_templates))]
    return fill(tpl.text, text)
