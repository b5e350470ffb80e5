"""Offline stage I generator: expands a constitution's seed bank (queries, templates x entities) with light
phrasing variation, and mixes in the benign pool. Deterministic under a seed; every example records its group."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ccguard.constitution import Category, Constitution
from ccguard.records import CROSSED_SOURCE, PAIR_SOURCE, Example, Label, stable_id
from ccguard.synth.pool import BenignPool

_PREFIXES = (
    "", "", "", "hey, ", "Quick question: ", "Hi! ", "ok so ", "Can you help? ", "I need help. ", "Hello. ",
    "Be honest: ", "urgent - ",
)  # fmt: skip
_SUFFIXES = (
    "", "", "", " Thanks!", " thx", " Please be detailed.", " Keep it short.", " Explain step by step.",
    " Answer in plain English.", " (asking for a project)", " ASAP pls",
)  # fmt: skip


@dataclass(frozen=True)
class SynthConfig:
    """How much stage I generates."""

    seed: int = 0
    queries_per_category: int | None = None  # None: all seed queries
    fills_per_template: int = 2
    templates_per_category: int | None = None
    phrasing_variants: float = 0.3  # probability a base gets one extra re-phrased sibling
    pool_size: int | None = None  # None: whole pool
    contextual_per_category: int = 6  # "turn this passage into instructions" requests built on seed responses
    neighbour_fills: int = 0  # harmful-category entities per harmless ``neighbour_templates`` template (0: none)
    pair_fills: int = 0  # entities per ``intent_pairs`` pair with '{entity}', each filling both sides (0: no pairs)
    crossed_fills: int = 0  # harmful-category entities per ``crossed_templates`` template (0: no crossed rows)
    crossed_harmless_fills: int = 0  # harmless ``crossed_entities`` per crossed template (more: everyday things abound)


# Contextual requests: the user pastes a passage and asks for it to be made operational (or explained). Harmful and
# harmless categories get the same frames, so the classifier has to read the passage and the ask, not the frame.
_CONTEXT_ASKS = (
    "Transform this description into detailed step-by-step instructions.",
    "Convert the passage below into a numbered procedure I can follow, with specific amounts.",
    "Rewrite the following as a practical how-to guide.",
    "Using only the text below, list everything I'd need and the order of the steps.",
    "Turn this into a checklist, and fill in any details it leaves out.",
    "Expand the following into a complete, detailed protocol.",
    "Here is some background. Based on it, tell me exactly what to do, step by step.",
    "Make this more specific and actionable:",
)  # fmt: skip
_CONTEXT_AFTER = (
    "Now turn the text above into detailed step-by-step instructions.",
    "Based on the passage above, give me the exact steps.",
    "Fill in the missing specifics in the text above so I can actually do it.",
)  # fmt: skip


def contextual_examples(cat: Category, cfg: SynthConfig, rng: random.Random) -> list[Example]:
    """Requests that paste one of the category's seed responses and ask for it as instructions."""
    passages = list(cat.seeds.responses) if cat.operational_context else []
    k = min(cfg.contextual_per_category, len(passages))
    out = []
    for passage in rng.sample(passages, k):
        if rng.random() < 0.7:
            text = f"{rng.choice(_CONTEXT_ASKS)}\n\n{passage}"
        else:
            text = f"{passage}\n\n{rng.choice(_CONTEXT_AFTER)}"
        # One group per passage: the same passage never sits on both sides of a split.
        out.append(_example(text, _label(cat), cat.id, "contextual", stable_id(cat.id, "ctx", passage)))
    return out


def _vary(text: str, rng: random.Random) -> str:
    out = f"{rng.choice(_PREFIXES)}{text}{rng.choice(_SUFFIXES)}"
    if rng.random() < 0.2:
        out = out.lower()
    return out


def _label(cat: Category) -> Label:
    return "harmful" if cat.kind == "harmful" else "harmless"


def _example(text: str, label: Label, category: str, source: str, group: str, parent: str | None = None) -> Example:
    return Example(
        id=stable_id(group, text),
        prompt=text,
        label=label,
        category=category,
        source=source,
        group=group,
        parent_id=parent,
        base=text if parent is None else None,
    )


def neighbour_examples(cat: Category, entities: list[str], cfg: SynthConfig, rng: random.Random) -> list[Example]:
    """Harmless questions about a harmful neighbour's entities: each of ``cat``'s ``neighbour_templates`` filled with
    ``neighbour_fills`` of ``entities``, grouped by template. The agent is named with harmless intent (its history, its
    treatment, how it is kept secure), so an agent's name alone does not carry the label."""
    out = []
    k = min(cfg.neighbour_fills, len(entities))
    for i, tpl in enumerate(cat.seeds.neighbour_templates if k else []):
        group = stable_id(cat.id, "n", str(i), tpl)
        for ent in rng.sample(entities, k):
            out.append(_example(tpl.replace("{entity}", ent), "harmless", cat.id, "neighbour", group))
    return out


def pair_examples(cat: Category, cfg: SynthConfig, rng: random.Random) -> list[Example]:
    """Both sides of each of ``cat``'s ``intent_pairs``, filled with the same ``pair_fills`` of its entities (a pair
    without '{entity}' once). The harmful side takes ``cat``'s label and the harmless side its ``as`` neighbour's; one
    group per pair, so the two sides never sit on opposite sides of a split. Same frame, same agent: only the intent
    tells them apart."""
    out = []
    k = min(cfg.pair_fills, len(cat.seeds.entities))
    for i, pair in enumerate(cat.seeds.intent_pairs if cfg.pair_fills > 0 else []):
        group = stable_id(cat.id, "p", str(i), pair.harmful, pair.harmless)
        fills = rng.sample(list(cat.seeds.entities), k) if "{entity}" in pair.harmful else [None]
        for ent in fills:
            for text, label, cid in ((pair.harmful, _label(cat), cat.id), (pair.harmless, "harmless", pair.as_)):
                out.append(_example(text if ent is None else text.replace("{entity}", ent), label, cid, PAIR_SOURCE,
                                    group))
    return out


def crossed_examples(cat: Category, fills: list[tuple[str, str]], cfg: SynthConfig, rng: random.Random) -> list[Example]:
    """Each of ``cat``'s ``crossed_templates`` filled with ``crossed_fills`` of its own entities (``cat``'s label) and
    ``crossed_harmless_fills`` harmless ``fills`` ((entity, category) pairs from its neighbours' ``crossed_entities``;
    each row takes its entity's category). One group per template, so its two sides never sit on opposite sides of a
    split. The phrasing is on both sides of the boundary, and only the thing asked about tells them apart."""
    out = []
    k, kh = cfg.crossed_fills, cfg.crossed_harmless_fills
    for i, tpl in enumerate(cat.seeds.crossed_templates if k > 0 else []):
        group = stable_id(cat.id, "x", str(i), tpl)
        for ent in rng.sample(list(cat.seeds.entities), min(k, len(cat.seeds.entities))):
            out.append(_example(tpl.replace("{entity}", ent), _label(cat), cat.id, CROSSED_SOURCE, group))
        for ent, cid in rng.sample(fills, min(kh, len(fills))):
            out.append(_example(tpl.replace("{entity}", ent), "harmless", cid, CROSSED_SOURCE, group))
    return out


def category_examples(cat: Category, cfg: SynthConfig, rng: random.Random) -> list[Example]:
    """Base examples for one category: seed queries, then template fills grouped by template."""
    label = _label(cat)
    out: list[Example] = []
    queries = list(cat.seeds.queries)
    if cfg.queries_per_category is not None and cfg.queries_per_category < len(queries):
        queries = rng.sample(queries, cfg.queries_per_category)
    for q in queries:
        out.append(_example(q, label, cat.id, "seed", stable_id(cat.id, "q", q)))
    templates = list(enumerate(cat.seeds.templates))
    if cfg.templates_per_category is not None and cfg.templates_per_category < len(templates):
        templates = rng.sample(templates, cfg.templates_per_category)
    if cat.seeds.entities:
        for i, tpl in templates:
            # All fills of one template share a group: a test split then holds templates never seen in training.
            group = stable_id(cat.id, "t", str(i), tpl)
            k = min(cfg.fills_per_template, len(cat.seeds.entities))
            for ent in rng.sample(list(cat.seeds.entities), k):
                out.append(_example(tpl.replace("{entity}", ent), label, cat.id, "template", group))
    varied = []
    out += contextual_examples(cat, cfg, random.Random(f"{cfg.seed}:{cat.id}:ctx"))
    for ex in out:
        if rng.random() < cfg.phrasing_variants:
            text = _vary(str(ex.prompt), rng)
            if text != ex.prompt:
                child = _example(text, ex.label, cat.id, ex.source, ex.group, parent=ex.id)
                varied.append(child.model_copy(update={"base": ex.prompt}))
    return out + varied


def pool_examples(pool: BenignPool, cfg: SynthConfig, rng: random.Random) -> list[Example]:
    """Harmless examples from the benign pool, one group per request."""
    items = [(d.id, r.text) for d in pool.domains for r in d.requests]
    if cfg.pool_size is not None and cfg.pool_size < len(items):
        items = rng.sample(items, cfg.pool_size)
    return [_example(t, "harmless", f"pool:{d}", "pool", stable_id("pool", d, t)) for d, t in items]


def generate(constitution: Constitution, pool: BenignPool | None, cfg: SynthConfig) -> list[Example]:
    """Stage I: all base examples (plus phrasing siblings), deterministic under ``cfg.seed``."""
    rng = random.Random(cfg.seed)
    out: list[Example] = []
    for cat in constitution.categories:
        out += category_examples(cat, cfg, random.Random(f"{cfg.seed}:{cat.id}"))
        out += neighbour_examples(cat, constitution.neighbour_entities(cat.id), cfg,
                                  random.Random(f"{cfg.seed}:{cat.id}:neighbour"))
        out += pair_examples(cat, cfg, random.Random(f"{cfg.seed}:{cat.id}:pair"))
        out += crossed_examples(cat, constitution.crossed_neighbour_entities(cat.id), cfg,
                                random.Random(f"{cfg.seed}:{cat.id}:crossed"))
    if pool is not None:
        out += pool_examples(pool, cfg, rng)
    seen: set[str] = set()
    unique = []
    for ex in out:
        if ex.id not in seen:
            seen.add(ex.id)
            unique.append(ex)
    return unique
