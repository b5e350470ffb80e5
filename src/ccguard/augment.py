"""Stage II: compose 1-3 registered transforms per example, for harmful and harmless examples alike."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from ccguard.records import Example, render_prompt, stable_id
from ccguard.registry import REGISTRY
from ccguard.transforms.base import Transform, TransformContext, build

# Composition order: what an attacker does to the words first, wrappers last.
_FAMILY_ORDER = {"keyword": 0, "style": 1, "encoding": 2, "structure": 3, "framing": 4}

DEFAULT_FAMILY_WEIGHTS = {"encoding": 1.0, "style": 0.8, "framing": 1.4, "structure": 0.6, "keyword": 0.4}


@dataclass(frozen=True)
class AugmentConfig:
    """How stage II augments."""

    seed: int = 0
    variants_per_example: float = 1.0  # expected variants per base; the fraction is a probability
    min_transforms: int = 1
    max_transforms: int = 3
    family_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FAMILY_WEIGHTS))
    exclude: tuple[str, ...] = ()


def _choose(rng: random.Random, cfg: AugmentConfig, by_family: dict[str, list[str]]) -> list[str]:
    k = rng.randint(cfg.min_transforms, cfg.max_transforms)
    families = [f for f in by_family if cfg.family_weights.get(f, 1.0) > 0]
    weights = [cfg.family_weights.get(f, 1.0) for f in families]
    chosen: dict[str, str] = {}
    for _ in range(k * 3):
        if len(chosen) >= k:
            break
        fam = rng.choices(families, weights)[0]
        # At most one transform per family keeps compositions readable (one cipher, one wrapper, ...).
        if fam not in chosen:
            chosen[fam] = rng.choice(by_family[fam])
    return [chosen[f] for f in sorted(chosen, key=lambda f: _FAMILY_ORDER.get(f, 2))]


def transforms_by_family(exclude: Sequence[str] = ()) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in REGISTRY.entries("transform"):
        if e.name not in exclude:
            out.setdefault(e.meta.get("family", "other"), []).append(e.name)
    return out


def augment(examples: list[Example], ctx_base: TransformContext, cfg: AugmentConfig) -> list[Example]:
    """Return the originals plus their transformed variants, each with lineage and the same group."""
    by_family = transforms_by_family(cfg.exclude)
    built: dict[str, Transform] = {}
    out = list(examples)
    for ex in examples:
        rng = random.Random(f"{cfg.seed}:{ex.id}")
        n = int(cfg.variants_per_example) + (rng.random() < cfg.variants_per_example % 1)
        for v in range(n):
            names = _choose(rng, cfg, by_family)
            ts = [built.setdefault(nm, build(nm)) for nm in names]
            ctx = TransformContext(
                rng=random.Random(f"{cfg.seed}:{ex.id}:{v}"),
                terms=ctx_base.terms,
                pool=ctx_base.pool,
                framings=ctx_base.framings,
            )
            prompt = ex.prompt
            for t in ts:
                prompt = t(prompt, ctx)
            if render_prompt(prompt) == render_prompt(ex.prompt):
                continue
            lineage = [*ex.lineage, *(t.step for t in ts)]
            out.append(
                ex.model_copy(
                    update={
                        "id": stable_id(ex.id, str(v), *names),
                        "prompt": prompt,
                        "parent_id": ex.id,
                        "base": ex.base or render_prompt(ex.prompt),
                        "lineage": lineage,
                    }
                )
            )
    return out
