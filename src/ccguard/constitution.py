"""Constitution: harmful categories and their harmless neighbours, each with a seed bank.

A constitution is one YAML file. It is validated with pydantic and every problem is reported with its location.
Its content hash (over the canonical JSON of the validated model) goes into every artifact built from it.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ccguard.errors import CcguardError

Kind = Literal["harmful", "harmless"]


class IntentPair(BaseModel):
    """Two requests in one frame about the same agent, differing only in what they ask for: ``harmful`` asks for
    uplift, ``harmless`` for something the neighbour category ``as`` allows (its history, treatment, detection)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    harmful: str = Field(min_length=1, description="The request that asks for uplift (this category's label).")
    harmless: str = Field(min_length=1, description="The same request, asking for something the neighbour allows.")
    as_: str = Field(alias="as", description="Id of the harmless neighbour category the harmless request belongs to.")

    @model_validator(mode="after")
    def _same_slots(self) -> IntentPair:
        if not self.harmful.strip() or not self.harmless.strip():
            raise ValueError("both sides must be non-empty")
        if self.harmful.strip() == self.harmless.strip():
            raise ValueError(f"the two sides are the same request: {self.harmful[:60]!r}")
        slots = (self.harmful.count("{entity}"), self.harmless.count("{entity}"))
        if slots not in ((0, 0), (1, 1)):
            raise ValueError("both sides must contain '{entity}' once, or neither: "
                             f"{self.harmful[:40]!r} / {self.harmless[:40]!r}")
        return self


class SeedBank(BaseModel):
    """Hand-written material a category's synthetic data is expanded from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queries: list[str] = Field(min_length=1, description="Example user queries, hand-written and diverse.")
    entities: list[str] = Field(default_factory=list, description="Topic entities that fill `{entity}` in templates.")
    templates: list[str] = Field(default_factory=list, description="Query templates; each has `{entity}` once.")
    neighbour_templates: list[str] = Field(
        default_factory=list,
        description="Harmless only: query templates whose `{entity}` is filled from the entities of the harmful "
        "categories that name this one as a neighbour: the same agents, asked about with harmless intent (history, "
        "treatment, detection). Each has `{entity}` once and must read as harmless for every such entity.",
    )
    intent_pairs: list[IntentPair] = Field(
        default_factory=list,
        description="Harmful only: frame-matched pairs. Each side is filled with the same entities of this category "
        "(or taken as is without `{entity}`), so the agent and the frame are on both sides and only the intent differs.",
    )
    crossed_templates: list[str] = Field(
        default_factory=list,
        description="Harmful only: request frames whose intent is neutral, so that the thing named in `{entity}` alone "
        "decides the label ('how would i make {entity} at home', 'my kids want to grow {entity}, what do we need'). "
        "Each is filled with this category's entities (harmful) and with the `crossed_entities` of its harmless "
        "neighbours (harmless): the same phrasing on both sides of the boundary. Each has `{entity}` once.",
    )
    crossed_entities: list[str] = Field(
        default_factory=list,
        description="Harmless only: everyday things of this category that a harmful neighbour's `crossed_templates` "
        "can ask to make, buy, grow, ship or scale up with no harm (kombucha, a Geiger counter, grass seed).",
    )
    responses: list[str] = Field(default_factory=list, description="Example assistant responses to this category.")
    partial: list[str] = Field(default_factory=list, description="Harmful only: answers that start to comply.")
    refusals: list[str] = Field(default_factory=list, description="Harmful only: refusals (labelled harmless).")

    @field_validator("templates", "neighbour_templates", "crossed_templates")
    @classmethod
    def _one_slot(cls, templates: list[str]) -> list[str]:
        for i, t in enumerate(templates):
            if t.count("{entity}") != 1:
                raise ValueError(f"template {i} must contain '{{entity}}' exactly once: {t[:60]!r}")
        return templates

    @field_validator("queries", "entities", "crossed_entities", "responses", "partial", "refusals")
    @classmethod
    def _non_empty(cls, items: list[str]) -> list[str]:
        for i, s in enumerate(items):
            if not s.strip():
                raise ValueError(f"item {i} is empty")
        return items


class Category(BaseModel):
    """One harmful category or harmless neighbour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Stable identifier, snake_case.")
    kind: Kind = Field(description="Whether content in this category is harmful (blocked) or harmless (allowed).")
    title: str = Field(description="Short human-readable title.")
    description: str = Field(description="Policy text: what is in scope, and where the boundary lies.")
    neighbours: list[str] = Field(default_factory=list, description="Ids of categories on the other side.")
    seeds: SeedBank = Field(description="The seed bank this category's data is generated from.")
    operational_context: bool = Field(
        default=True,
        description="Whether 'turn this passage into step-by-step instructions' over one of this category's seed "
        "responses keeps the category's label. Set it false for harmless categories whose passages would cross into "
        "a harmful category once made operational (fiction, history).",
    )

    @model_validator(mode="after")
    def _harmless_has_no_refusals(self) -> Category:
        if self.kind == "harmless" and (self.seeds.partial or self.seeds.refusals):
            raise ValueError("harmless categories take no 'partial' or 'refusals' seeds")
        if self.kind == "harmful" and self.seeds.neighbour_templates:
            raise ValueError("harmful categories take no 'neighbour_templates': those are harmless questions about a "
                             "harmful category's entities")
        if self.kind == "harmless" and self.seeds.intent_pairs:
            raise ValueError("harmless categories take no 'intent_pairs': a pair's harmful side takes the category's "
                             "label, and its harmless side names a neighbour with 'as'")
        if self.kind == "harmless" and self.seeds.crossed_templates:
            raise ValueError("harmless categories take no 'crossed_templates': those are filled with a harmful "
                             "category's entities; give this category 'crossed_entities' instead")
        if self.kind == "harmful" and self.seeds.crossed_entities:
            raise ValueError("harmful categories take no 'crossed_entities': those fill a harmful neighbour's "
                             "'crossed_templates' with harmless things; a harmful category's own 'entities' fill the "
                             "other side")
        if self.seeds.crossed_templates and not self.seeds.entities:
            raise ValueError("'crossed_templates' need this category's 'entities' for their harmful side")
        for i, p in enumerate(self.seeds.intent_pairs):
            if p.as_ not in self.neighbours:
                raise ValueError(f"intent_pairs[{i}] names {p.as_!r} in 'as', which is not one of this category's "
                                 f"neighbours ({', '.join(self.neighbours) or 'none'})")
            if "{entity}" in p.harmful and not self.seeds.entities:
                raise ValueError(f"intent_pairs[{i}] has '{{entity}}', but this category has no entities")
        return self


class Constitution(BaseModel):
    """A named policy: categories of content to block, and neighbours to allow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", description="Short name; also the run directory name.")
    version: str = Field(default="1", description="Free-form version string of this policy.")
    description: str = Field(description="What this constitution protects against.")
    refusal: str = Field(
        default="I can't help with that request.",
        description="Refusal text the runtime returns when it blocks.",
    )
    benign_pool: str | None = Field(
        default="everyday",
        description="Bundled benign pool to mix in (name), a path to a pool YAML, or null for none.",
    )
    categories: list[Category] = Field(min_length=2, description="Harmful categories and harmless neighbours.")

    @model_validator(mode="after")
    def _check_categories(self) -> Constitution:
        ids = [c.id for c in self.categories]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate category ids: {', '.join(dupes)}")
        kinds = {c.kind for c in self.categories}
        if kinds != {"harmful", "harmless"}:
            raise ValueError("need at least one harmful and one harmless category")
        for c in self.categories:
            unknown = [n for n in c.neighbours if n not in ids]
            if unknown:
                raise ValueError(f"category {c.id!r} names unknown neighbours: {', '.join(unknown)}")
        kind = {c.id: c.kind for c in self.categories}
        for c in self.categories:
            for i, p in enumerate(c.seeds.intent_pairs):
                if kind[p.as_] != "harmless":
                    raise ValueError(f"category {c.id!r}: intent_pairs[{i}] names {p.as_!r} in 'as', which is not a "
                                     "harmless category")
        for c in self.categories:
            if c.seeds.crossed_templates and not self.crossed_neighbour_entities(c.id):
                raise ValueError(f"category {c.id!r} has crossed_templates, but none of its harmless neighbours "
                                 f"({', '.join(c.neighbours) or 'none'}) has crossed_entities for their harmless side")
            if c.seeds.neighbour_templates and not self.neighbour_entities(c.id):
                raise ValueError(f"category {c.id!r} has neighbour_templates, but no harmful category with entities "
                                 "names it as a neighbour")
        return self

    @property
    def harmful(self) -> list[Category]:
        return [c for c in self.categories if c.kind == "harmful"]

    @property
    def harmless(self) -> list[Category]:
        return [c for c in self.categories if c.kind == "harmless"]

    def neighbour_entities(self, cid: str) -> list[str]:
        """The entities of the harmful categories that name ``cid`` as a neighbour (what its
        ``neighbour_templates`` are filled with), deduplicated in constitution order."""
        out: dict[str, None] = {}
        for c in self.harmful:
            if cid in c.neighbours:
                out.update(dict.fromkeys(e.strip() for e in c.seeds.entities if e.strip()))
        return list(out)

    def crossed_neighbour_entities(self, cid: str) -> list[tuple[str, str]]:
        """The (entity, category id) pairs that fill the harmless side of ``cid``'s ``crossed_templates``: the
        ``crossed_entities`` of its harmless neighbours, in constitution order, each once."""
        out: dict[str, str] = {}
        neighbours = self.category(cid).neighbours
        for c in self.harmless:
            if c.id in neighbours:
                for e in c.seeds.crossed_entities:
                    out.setdefault(e.strip(), c.id)
        return list(out.items())

    def category(self, cid: str) -> Category:
        for c in self.categories:
            if c.id == cid:
                return c
        raise KeyError(cid)

    @property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the validated constitution."""
        d = self.model_dump(mode="json", by_alias=True)
        for c in d["categories"]:  # a field added later hashes only when used, so older constitutions keep their hash
            for later in ("neighbour_templates", "intent_pairs", "crossed_templates", "crossed_entities"):
                if not c["seeds"][later]:
                    del c["seeds"][later]
        blob = json.dumps(d, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def harmful_terms(self) -> list[str]:
        """Topic entities of harmful categories, longest first (used by keyword transforms and baselines)."""
        terms = {e.strip() for c in self.harmful for e in c.seeds.entities if e.strip()}
        return sorted(terms, key=lambda t: (-len(t), t))


def bundled_names() -> list[str]:
    """Names of the constitutions shipped with ccguard."""
    root = resources.files("ccguard") / "constitutions"
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def resolve(name_or_path: str | Path) -> Path:
    """A bundled constitution's name, or a path to a YAML file, as a path."""
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.exists() or "/" in str(name_or_path):
        if not p.is_file():
            raise CcguardError("constitution file not found", where=str(p))
        return p
    bundled = resources.files("ccguard") / "constitutions" / f"{name_or_path}.yaml"
    if not bundled.is_file():
        raise CcguardError(
            f"no bundled constitution named {name_or_path!r} (bundled: {', '.join(bundled_names())})"
        )
    return Path(str(bundled))


def _loc(loc: tuple[int | str, ...], data: object) -> str:
    """Turn a pydantic location into 'categories[3] (id=toxins).seeds.templates[2]'."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("id"), str):
                    label += f" (id={node['id']})"
            else:
                node = None
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def validation_problems(path: str | Path) -> list[str]:
    """Every problem in a constitution file, each as 'FILE: location: message'. Empty when valid."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [f"{p}: file not found"]
    except (OSError, UnicodeDecodeError) as e:
        return [f"{p}: cannot read: {e}"]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        return [f"{p}: {where}: invalid YAML: {getattr(e, 'problem', None) or e}"]
    if not isinstance(data, dict):
        return [f"{p}: top level must be a mapping with name, description and categories"]
    try:
        Constitution.model_validate(data)
    except ValidationError as e:
        return [f"{p}: {_loc(err['loc'], data)}: {err['msg']}" for err in e.errors()]
    return []


def load(name_or_path: str | Path) -> Constitution:
    """Load and validate a constitution; raise CcguardError naming the first problem (and how many more)."""
    path = resolve(name_or_path)
    problems = validation_problems(path)
    if problems:
        more = f" (and {len(problems) - 1} more; run 'ccguard constitution validate')" if len(problems) > 1 else ""
        raise CcguardError(problems[0] + more)
    return Constitution.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
