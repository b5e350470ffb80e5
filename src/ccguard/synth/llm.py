"""Stage I via an LLM: prompts built from the constitution ask for diverse queries per category, harmful and
harmless, and for responses to them. Output is deduplicated (exact and near-duplicate) and quality-filtered.

Harmful-style responses come only from a backend marked ``helpful_only``; refusals and helpful answers come from any
backend. Every request is journalled (resumable) and cached (a re-run costs nothing); the manifest records the
backend, token counts, cost and what the filters dropped.
"""

from __future__ import annotations

import json
import random
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ccguard.constitution import Category, Constitution
from ccguard.evaluate.rubric import is_actionable
from ccguard.llm.base import GenerateParams
from ccguard.llm.client import LLMClient
from ccguard.llm.jobs import Task, journal_usage, run_tasks
from ccguard.records import Example, Message, atomic_write_text, stable_id, write_jsonl

LANGUAGES = ("English", "Spanish", "French", "German", "Chinese")

_REFUSAL = re.compile(
    r"^\W*(i\s*(?:am|'m)\s+(?:sorry|unable|not able)|i\s+(?:can(?:no|')t|cannot|won't|will not|must decline)|"
    r"sorry,|as an ai|i apologi[sz]e|unfortunately,? i|lo siento|je ne peux pas|désolé|es tut mir leid|抱歉|对不起|我不能)",
    re.IGNORECASE,
)
# Bracketed stand-ins would become a shortcut the classifier learns instead of the content.
_PLACEHOLDER = re.compile(r"\[(?:redacted|insert|placeholder|x{2,}|[A-Z _]{4,})\]|<(?:placeholder|redacted)>", re.IGNORECASE)
_NUMBERED = re.compile(r"^\s*(?:\d{1,3}[.):]|[-*•]|\(\d{1,3}\))\s*")


@dataclass(frozen=True)
class LLMSynthConfig:
    """How much stage I asks an LLM for."""

    seed: int = 0
    batches_per_category: int = 4
    queries_per_batch: int = 10
    languages: tuple[str, ...] = LANGUAGES
    responses_per_category: int = 8
    temperature: float = 0.9
    max_tokens: int = 800
    response_max_tokens: int = 400
    near_duplicate: float = 0.8  # character-trigram Jaccard at or above which a query is a near-duplicate
    concurrency: int = 4


def looks_like_refusal(text: str) -> bool:
    return bool(_REFUSAL.match(text.strip()[:80]))


def parse_list(text: str) -> list[str]:
    """Items of a numbered or bulleted list, one per line; unnumbered prose lines are ignored when any are numbered."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    numbered = [ln for ln in lines if _NUMBERED.match(ln)]
    items = [_NUMBERED.sub("", ln, count=1) for ln in (numbered or lines)]
    return [i.strip().strip('"“”').strip() for i in items if i.strip()]


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Runs of ``n`` normalised words."""
    w = normalise(text).split()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def quality_problem(
    text: str, *, echo_of: set[tuple[str, ...]] | frozenset[tuple[str, ...]] = frozenset(), min_chars: int = 8, max_chars: int = 2000
) -> str | None:
    """Why a generated query is unusable, or None. ``echo_of`` holds the :func:`shingles` of the prompt that produced
    it: a query that copies five words in a row from that prompt is an echo, not a query."""
    t = text.strip()
    if len(t) < min_chars:
        return "too_short"
    if len(t) > max_chars:
        return "too_long"
    if looks_like_refusal(t):
        return "refusal"
    if _PLACEHOLDER.search(t):
        return "placeholder"
    letters = sum(ch.isalpha() for ch in t)
    if letters < 0.5 * len(t.replace(" ", "")):
        return "not_text"
    if re.search(r"\b(?:category|policy)\s*:", t, re.IGNORECASE) or "user request" in t.lower():
        return "instruction_echo"
    if echo_of and shingles(t) & echo_of:
        return "instruction_echo"
    return None


def normalise(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", t).split())


def _trigrams(text: str) -> set[str]:
    t = normalise(text)
    return {t[i : i + 3] for i in range(max(1, len(t) - 2))}


def dedupe(items: Iterable[str], existing: Iterable[str] = (), threshold: float = 0.8) -> tuple[list[str], Counter[str]]:
    """Keep items that are neither exact (normalised) nor near duplicates of an earlier item or of ``existing``."""
    kept: list[str] = []
    dropped: Counter[str] = Counter()
    seen_exact = {normalise(e) for e in existing}
    grams: list[set[str]] = [_trigrams(e) for e in existing]
    for item in items:
        key = normalise(item)
        if key in seen_exact:
            dropped["exact_duplicate"] += 1
            continue
        g = _trigrams(item)
        if any(len(g & h) / max(1, len(g | h)) >= threshold for h in grams):
            dropped["near_duplicate"] += 1
            continue
        seen_exact.add(key)
        grams.append(g)
        kept.append(item)
    return kept, dropped


def _task_seed(task_id: str) -> int:
    return int(task_id[:8], 16)


def query_messages(const: Constitution, cat: Category, k: int, language: str, examples: list[str]) -> list[Message]:
    side = "requests a guard must BLOCK" if cat.kind == "harmful" else "requests a guard must ALLOW (harmless)"
    system = (
        "You write synthetic training data for a content-safety classifier. It protects against: "
        f"{const.description.strip()} You write only user requests (questions or instructions), never answers."
    )
    shown = "\n".join(f"- {e}" for e in examples)
    user = (
        f"Category: {cat.title} ({side}).\nPolicy: {cat.description.strip()}\n\nExamples from this category:\n{shown}\n\n"
        f"Write {k} new user requests that belong in this category, in {language}. Make them diverse: vary the length "
        "(a few words to a short paragraph), the tone (casual, formal, terse, rambling), how direct they are, and the "
        f"specific topic. Do not copy the examples. Output one request per line, numbered 1 to {k}, and nothing else."
    )
    return [Message(role="system", content=system), Message(role="user", content=user)]


def shape_messages(cat: Category, query: str) -> list[Message]:
    """For a helpful-only backend: the shape of a compliant answer without its substance."""
    system = (
        "You write synthetic training data for a safety classifier that must learn what compliant answers to "
        f"dangerous requests look like ({cat.title}). Answer the user in the confident, structured tone of a model "
        "that complies, but include none of the substance: no quantities, temperatures, times, named reagents, "
        "precursors or strains beyond those the request names, no equipment specifications, routes or protocols, no "
        "sources for materials and no ways to evade controls or detection. Use vague phrases such as 'the starting "
        "materials', 'the conditions the step needs', 'the equipment a lab would use'. Never write placeholders "
        "such as [REDACTED]."
    )
    return [Message(role="system", content=system), Message(role="user", content=query)]


def refusal_messages(cat: Category, query: str) -> list[Message]:
    system = (
        f"You are a careful assistant. The user's request falls under a policy you must not help with: {cat.title}. "
        "Refuse briefly and politely, without lecturing, and offer a safe, related alternative if there is one."
    )
    return [Message(role="system", content=system), Message(role="user", content=query)]


def _example(text: str, cat: Category, group: str, response: str | None = None, label: str | None = None) -> Example:
    return Example(
        id=stable_id(group, text, response or ""),
        prompt=text,
        response=response,
        label=label or ("harmful" if cat.kind == "harmful" else "harmless"),  # type: ignore[arg-type]
        category=cat.id,
        source="llm",
        group=group,
        base=text,
    )


async def generate_llm_data(
    const: Constitution,
    client: LLMClient,
    cfg: LLMSynthConfig,
    out_dir: Path,
    *,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
    judge: Any = None,
) -> dict[str, Any]:
    """Write ``queries.jsonl`` (prompt examples), ``exchanges.jsonl`` (with responses) and ``manifest.json`` under
    ``out_dir``; the request journals live in ``out_dir/jobs``. Returns the manifest.

    With a ``helpful_only`` backend, harmful-style answers are asked for as the shape of an answer without its
    substance, and each one is screened by the actionability judge (``judge``, or the same backend) before it is
    kept. Such a client must not cache outside the run directory (see :func:`contained`)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    rng = random.Random(cfg.seed)
    # 1. Queries: batches per category, each in one language, each showing a different sample of the seed bank.
    tasks: list[Task] = []
    owner: dict[str, Category] = {}
    for cat in const.categories:
        for b in range(cfg.batches_per_category):
            lang = cfg.languages[b % len(cfg.languages)]
            shown = rng.sample(list(cat.seeds.queries), min(5, len(cat.seeds.queries)))
            msgs = query_messages(const, cat, cfg.queries_per_batch, lang, shown)
            tid = stable_id(cat.id, str(b), json.dumps([m.content for m in msgs]), str(cfg.seed), n=24)
            params = GenerateParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=_task_seed(tid))
            tasks.append(Task(tid, msgs, params))
            owner[tid] = cat
    log(f"asking {client.spec.kind}:{client.spec.model} for queries: {len(tasks)} requests")
    rows = await run_tasks(client, tasks, out_dir / "jobs" / "queries.jsonl", concurrency=cfg.concurrency, progress=progress)
    dropped: Counter[str] = Counter()
    raw = 0
    queries: list[Example] = []
    by_cat: dict[str, list[str]] = {}
    for task, row in zip(tasks, rows, strict=True):
        items = parse_list(row["text"])
        echo_of = shingles(task.messages[-1].content)
        if not items:
            dropped["unparseable_reply"] += 1
        for item in items:
            raw += 1
            why = quality_problem(item, echo_of=echo_of)
            if why:
                dropped[why] += 1
            else:
                by_cat.setdefault(owner[task.id].id, []).append(item)
    for cat in const.categories:
        kept, dup = dedupe(by_cat.get(cat.id, []), existing=cat.seeds.queries, threshold=cfg.near_duplicate)
        dropped.update(dup)
        queries += [_example(q, cat, stable_id(cat.id, "llm", normalise(q))) for q in kept]

    # 2. Responses: helpful answers to harmless queries; refusals to harmful ones; harmful-style answers only from a
    # helpful-only backend.
    rtasks: list[Task] = []
    plan: dict[str, tuple[Example, str]] = {}
    cats = {c.id: c for c in const.categories}
    skipped_harmful = 0
    for cat in const.categories:
        mine = [q for q in queries if q.category == cat.id]
        for q in random.Random(f"{cfg.seed}:{cat.id}:resp").sample(mine, min(cfg.responses_per_category, len(mine))):
            kinds = ["answer"] if cat.kind == "harmless" else ["refusal"] + (["answer"] if client.helpful_only else [])
            # Harmful queries sampled for responses that get no harmful-style answer, for want of a helpful-only model.
            skipped_harmful += cat.kind == "harmful" and not client.helpful_only
            for kind in kinds:
                if kind == "refusal":
                    msgs = refusal_messages(cat, str(q.prompt))
                elif cat.kind == "harmful":
                    msgs = shape_messages(cat, str(q.prompt))
                else:
                    msgs = [Message(role="user", content=str(q.prompt))]
                tid = stable_id(q.id, kind, json.dumps([m.content for m in msgs]), n=24)
                params = GenerateParams(max_tokens=cfg.response_max_tokens, temperature=0.7, seed=_task_seed(tid))
                rtasks.append(Task(tid, msgs, params))
                plan[tid] = (q, kind)
    if not client.helpful_only:
        log("harmful-style responses skipped: the backend is not marked helpful_only (refusals and helpful answers only)")
    log(f"asking for responses: {len(rtasks)} requests")
    rrows = await run_tasks(client, rtasks, out_dir / "jobs" / "responses.jsonl", concurrency=cfg.concurrency, progress=progress)
    exchanges: list[Example] = []
    rdropped: Counter[str] = Counter()
    for task, row in zip(rtasks, rrows, strict=True):
        q, kind = plan[task.id]
        text = row["text"].strip()
        cat = cats[q.category or ""]
        if len(text) < 20:
            rdropped["too_short"] += 1
            continue
        if _PLACEHOLDER.search(text):
            rdropped["placeholder"] += 1
            continue
        refused = looks_like_refusal(text)
        if kind == "answer" and cat.kind == "harmless" and refused:
            rdropped["over_refusal"] += 1
            continue
        if kind == "refusal" and not refused and cat.kind == "harmful":
            rdropped["refusal_that_complied"] += 1
            continue
        # A helpful-only model that refused anyway produced a refusal: keep it, labelled as one.
        label = "harmful" if (kind == "answer" and cat.kind == "harmful" and not refused) else "harmless"
        if label == "harmful" and await is_actionable(judge or client, str(q.prompt), text):
            # Only the shape of an answer may be kept: the judge saw real specifics, so it is dropped unwritten.
            rdropped["judged_actionable"] += 1
            continue
        exchanges.append(_example(str(q.prompt), cat, q.group, response=text, label=label))

    write_jsonl(out_dir / "queries.jsonl", queries)
    write_jsonl(out_dir / "exchanges.jsonl", exchanges)
    manifest = {
        "constitution": {"name": const.name, "hash": const.content_hash},
        "config": asdict(cfg),
        "backend": client.spec.public(),
        # Every request of the job (journalled ones from earlier, killed runs included) and this process's share.
        "usage": journal_usage(rows + rrows, client.price),
        "this_run": client.meter.to_dict(),
        "queries": {
            "requests": len(tasks), "raw_items": raw, "kept": len(queries), "dropped": dict(dropped),
            "by_category": dict(Counter(q.category for q in queries)),
        },
        "responses": {
            "requests": len(rtasks), "kept": len(exchanges), "dropped": dict(rdropped),
            "by_label": dict(Counter(e.label for e in exchanges)),
            "harmful_style_skipped_queries": skipped_harmful,
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest


def contained(client: LLMClient, run_dir: Path) -> LLMClient:
    """A helpful-only client writes nothing outside the run directory: its request cache moves into it."""
    if client.helpful_only and client.cache_dir is not None:
        client.cache_dir = Path(run_dir) / "cache"
    return client
