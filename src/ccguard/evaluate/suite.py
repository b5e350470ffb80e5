"""Declarative evaluation suites: labelled sets of prompts or exchanges, optional jailbreak composition.

Paths may use ``{run}`` (the run directory a guard belongs to) and ``{dev}`` (``$CCGUARD_DEV_DATA``, default
``../shared/data/dev``). A set's ``path`` is a JSONL or CSV file, or ``hf:NAME[:CONFIG]:SPLIT`` for a Hugging Face
dataset (needs network and the ``datasets`` package).
"""

from __future__ import annotations

import csv
import json
import os
import random
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ccguard.errors import CcguardError
from ccguard.records import render_prompt


class SetSpec(BaseModel):
    """One labelled set."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Set name used in the report.")
    kind: Literal["prompts", "responses"] = Field(default="prompts", description="Score prompts, or exchanges.")
    path: str = Field(description="JSONL/CSV path or hf:NAME[:CONFIG]:SPLIT.")
    text_field: str = Field(default="prompt", description="Field holding the prompt (string or chat messages).")
    response_field: str = Field(default="response", description="Field holding the response (kind: responses).")
    label_field: str | None = Field(default="label", description="Field holding the label; None: all negative.")
    positive: list[str] = Field(default_factory=lambda: ["harmful"], description="Label values counted as harmful.")
    category_field: str | None = Field(default=None, description="Field used for per-category breakdowns.")
    reference_field: str | None = Field(default=None, description="Reference helpful answer, for rubric grading.")
    query_field: str | None = Field(default=None, description="Forbidden query for rubric grading (default: prompt).")
    where: dict[str, Any] = Field(default_factory=dict, description="Keep rows whose fields equal these values.")
    max_items: int | None = Field(default=None, description="Subsample to at most this many rows (seeded).")
    expect_flagged: bool | None = Field(default=None, description="Informational: whether flags are wanted here.")


class TemplateSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(description="JSONL of templates.")
    field: str = Field(default="template", description="Field holding the template text.")
    placeholder: str = Field(default="{payload}", description="Where the request goes; appended when absent.")


class ComposeSpec(BaseModel):
    """Jailbreak composition: templates x queries x transforms, seeded. Harmful and benign queries are wrapped
    alike, so the composed set has both classes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Set name.")
    harmful_from: str = Field(description="Set whose positive rows supply harmful queries.")
    benign_from: str = Field(description="Set whose negative rows supply benign queries.")
    templates: Literal["bundled"] | TemplateSource = Field(default="bundled", description="Template source.")
    transforms: list[str] = Field(default_factory=lambda: ["none"], description="Transforms applied before wrapping.")
    n: int = Field(default=300, description="Items per class.")
    seed: int = Field(default=0, description="Sampling seed.")


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Suite name.")
    description: str = Field(default="", description="What the suite measures.")
    requires: list[str] = Field(default_factory=list, description="Paths that must exist, or the suite is skipped.")
    sets: list[SetSpec] = Field(default_factory=list, description="Labelled sets.")
    compose: list[ComposeSpec] = Field(default_factory=list, description="Jailbreak-composed sets.")


class EvalItem(BaseModel):
    model_config = ConfigDict(frozen=True)
    prompt: str
    response: str | None = None
    reference: str | None = None
    query: str | None = None
    label: int
    category: str = ""
    family: str = "none"


def load_suite(name_or_path: str) -> Suite:
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.exists():
        if not p.is_file():
            raise CcguardError("suite file not found", where=str(p))
        text, where = p.read_text(encoding="utf-8"), str(p)
    else:
        res = resources.files("ccguard") / "suites" / f"{name_or_path}.yaml"
        if not res.is_file():
            raise CcguardError(f"no bundled suite named {name_or_path!r} (bundled: synthetic, dev)")
        text, where = res.read_text(encoding="utf-8"), f"suite {name_or_path}"
    try:
        return Suite.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as e:
        raise CcguardError(f"invalid YAML: {e}", where=where) from None
    except ValidationError as e:
        err = e.errors()[0]
        raise CcguardError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", where=where) from None


def expand(path: str, run_dir: Path | None) -> str:
    dev = os.environ.get("CCGUARD_DEV_DATA", str(Path.cwd().parent / "shared" / "data" / "dev"))
    out = path.replace("{dev}", dev)
    if "{run}" in out:
        if run_dir is None:
            raise CcguardError(f"path {path!r} needs the run directory, but the guard is not inside a run")
        out = out.replace("{run}", str(run_dir))
    return out


def _rows(path: str) -> list[dict[str, Any]]:
    if path.startswith("hf:"):
        try:
            from datasets import load_dataset
        except ImportError:
            raise CcguardError("hf: sets need the 'datasets' package (pip install datasets)") from None
        parts = path[3:].split(":")
        name, split = parts[0], parts[-1]
        config = parts[1] if len(parts) == 3 else None
        return [dict(r) for r in load_dataset(name, config, split=split)]
    p = Path(path)
    if not p.is_file():
        raise CcguardError("file not found", where=str(p))
    if p.suffix == ".csv":
        with p.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    rows = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise CcguardError(f"invalid JSON ({e.msg})", where=f"{p}:{n}") from None
    return rows


def _text(value: Any) -> str:
    if isinstance(value, list):
        from ccguard.records import parse_prompt

        return render_prompt(parse_prompt(value, where="suite"))
    return "" if value is None else str(value)


def load_set(spec: SetSpec, run_dir: Path | None, seed: int = 0) -> list[EvalItem]:
    rows = _rows(expand(spec.path, run_dir))
    rows = [r for r in rows if all(r.get(k) == v for k, v in spec.where.items())]
    if spec.max_items is not None and len(rows) > spec.max_items:
        rows = random.Random(seed).sample(rows, spec.max_items)
    items = []
    for i, r in enumerate(rows):
        if spec.text_field not in r:
            raise CcguardError(f"row {i + 1} has no field {spec.text_field!r}", where=spec.path)
        label = int(str(r.get(spec.label_field)) in spec.positive) if spec.label_field else 0
        family = "+".join(s.get("family", "?") for s in r.get("lineage", [])) or "none"
        items.append(EvalItem(
            prompt=_text(r[spec.text_field]),
            response=_text(r.get(spec.response_field)) if spec.kind == "responses" else None,
            label=label, category=str(r.get(spec.category_field, "")) if spec.category_field else "", family=family,
            reference=_text(r.get(spec.reference_field)) if spec.reference_field else None,
            query=_text(r.get(spec.query_field)) if spec.query_field else None,
        ))
    return items


def compose_set(spec: ComposeSpec, sets: dict[str, list[EvalItem]], run_dir: Path | None, terms: tuple[str, ...]) -> list[EvalItem]:
    """Wrap harmful and benign queries in templates after a registered transform, seeded."""
    from ccguard.transforms.base import TransformContext, build, load_framings

    rng = random.Random(spec.seed)
    framings = load_framings()
    if spec.templates == "bundled":
        templates = [t.text for t in framings.jailbreak_templates]
        placeholder = "{payload}"
    else:
        templates = [str(r[spec.templates.field]) for r in _rows(expand(spec.templates.path, run_dir))]
        placeholder = spec.templates.placeholder
    harmful = [x for x in sets[spec.harmful_from] if x.label == 1]
    benign = [x for x in sets[spec.benign_from] if x.label == 0]
    if not harmful or not benign or not templates:
        raise CcguardError(f"compose {spec.name!r}: needs harmful and benign queries and templates")
    out = []
    for label, pool in ((1, harmful), (0, benign)):
        for _ in range(spec.n):
            q = rng.choice(pool)
            name = rng.choice(spec.transforms)
            text = q.prompt
            if name != "none":
                ctx = TransformContext(rng=random.Random(rng.random()), terms=terms, framings=framings, pool=(("Hi", "Hello!"),))
                text = render_prompt(build(name)(text, ctx))
            tpl = rng.choice(templates)
            wrapped = tpl.replace(placeholder, text, 1) if placeholder in tpl else f"{tpl}\n\n{text}"
            out.append(EvalItem(prompt=wrapped, label=label, category=q.category, family=name))
    return out
