"""Offline, search-based red teaming: beam search over compositions of the registered transforms, minimising the
deployed input classifier's score (decoded views and windows included) on held-out harmful queries.

Every candidate keeps its lineage, so an evasion can be rebuilt and its recipe read off.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ccguard.policy import flagged
from ccguard.records import Example, Step, render_prompt, stable_id
from ccguard.registry import REGISTRY
from ccguard.transforms.base import TransformContext, build


@dataclass(frozen=True)
class SearchConfig:
    """Beam search over transform compositions."""

    beam: int = 3
    depth: int = 2
    proposals: int = 10  # transforms tried per beam element per depth
    seed: int = 0
    exclude: tuple[str, ...] = ()


@dataclass
class Candidate:
    prompt: Any
    steps: list[Step] = field(default_factory=list)
    score: float = 1.0


def search_query(
    clf: Any, query: Example, threshold: float, ctx_base: TransformContext, cfg: SearchConfig, names: Sequence[str]
) -> list[Candidate]:
    """All candidates scored for one query, best (lowest score) first."""
    rng = random.Random(f"{cfg.seed}:{query.id}")
    beam = [Candidate(query.prompt, [], clf.score([render_prompt(query.prompt)])[0].score)]
    seen: list[Candidate] = []
    for depth in range(cfg.depth):
        proposals: list[Candidate] = []
        for cand in beam:
            used = {s.name for s in cand.steps}
            options = [n for n in names if n not in used]
            for name in rng.sample(options, min(cfg.proposals, len(options))):
                t = build(name)
                ctx = TransformContext(
                    rng=random.Random(f"{cfg.seed}:{query.id}:{depth}:{name}:{len(proposals)}"),
                    terms=ctx_base.terms, pool=ctx_base.pool, framings=ctx_base.framings,
                )
                proposals.append(Candidate(t(cand.prompt, ctx), [*cand.steps, t.step]))
        if not proposals:
            break
        scores = clf.score([render_prompt(p.prompt) for p in proposals])
        for p, s in zip(proposals, scores, strict=True):
            p.score = s.score
        seen += proposals
        beam = sorted(proposals, key=lambda c: c.score)[: cfg.beam]
        if not flagged(beam[0].score, threshold):
            # An evasion at this depth is enough: deeper compositions only make it less natural.
            break
    return sorted(seen, key=lambda c: c.score)


def redteam(
    clf: Any, queries: Sequence[Example], threshold: float, ctx: TransformContext, cfg: SearchConfig
) -> tuple[list[Example], dict[str, Any]]:
    """Search every query; return the evasions (as harmful examples with lineage) and summary stats."""
    names = [e.name for e in REGISTRY.entries("transform") if e.name not in cfg.exclude]
    evasions: list[Example] = []
    found = 0
    tried = 0
    for q in queries:
        cands = search_query(clf, q, threshold, ctx, cfg, names)
        tried += len(cands)
        evading = [c for c in cands if not flagged(c.score, threshold)]
        if evading:
            found += 1
        for c in evading[: cfg.beam]:
            evasions.append(
                q.model_copy(
                    update={
                        "id": stable_id(q.id, "redteam", *(s.name for s in c.steps), render_prompt(c.prompt)[:200]),
                        "prompt": c.prompt,
                        "parent_id": q.id,
                        "base": q.base or render_prompt(q.prompt),
                        "lineage": [*q.lineage, *c.steps],
                        "source": "redteam",
                    }
                )
            )
    by_recipe: dict[str, int] = {}
    for e in evasions:
        key = "+".join(s.name for s in e.lineage) or "none"
        by_recipe[key] = by_recipe.get(key, 0) + 1
    stats = {
        "queries": len(queries),
        "queries_evaded": found,
        "evasion_rate": found / max(1, len(queries)),
        "candidates_scored": tried,
        "evasions": len(evasions),
        "top_recipes": dict(sorted(by_recipe.items(), key=lambda kv: -kv[1])[:10]),
    }
    return evasions, stats
