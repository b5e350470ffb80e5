"""Multi-turn training conversations for the input classifier, built offline from the seed bank (design/011, 015).

Two shapes, drawn at the same rate for harmful and harmless requests, so that the classifier has to read what the
turns ask for together (design/015 measures the imbalances that availability still leaves):

- **crescendo** (requests of the constitution's categories): one to three earlier exchanges on the same topic
  (harmless requests of the same split that name the same entity, or else come from the request's own or neighbouring
  categories, each with a short harmless reply), then the request itself. Where the earlier turns named the entity,
  the last turn may say "it" instead, so that it reads innocuously on its own. A harmful request after a harmless
  build-up is harmful; a harmless question after the same build-up stays harmless, which is what keeps a long
  biology conversation from poisoning the next question.
- **split**: the request's words (a Chinese request's characters) spread over two to four consecutive user turns,
  with or without a short acknowledgement between them, and sometimes a closing "now answer that" turn.

Earlier requests come only from the same split; the short replies are harmless seed answers of their category (or,
for a quarter of the turns of every label, a generic one) and may also occur in other splits. Each conversation joins
the group of its final request.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ccguard.constitution import Constitution
from ccguard.records import Example, Message, Step, stable_id
from ccguard.synth.voices import sentences

# Training anchors the windows of these variants on their last turn: their earlier turns are harmless build-up. (A
# split request's earlier turns are the request itself, so it keeps the usual fallback.)
ANCHOR_LAST_TURN = ("crescendo",)
_ACKS = ("Okay.", "Go on.", "Sure, continue.", "Got it, what's the rest?", "Mm-hm.", "I'm listening.")
_SPLIT_OPEN = (
    "I'll send my question in a few parts.", "My message got cut up, here it is in pieces.",
    "Let me type this out bit by bit.", "",
)  # fmt: skip
_SPLIT_CLOSE = ("Now answer the whole question.", "That's all of it. Go ahead and answer.", "Put that together and reply.", "")
_REPLY_FALLBACK = ("Sure, happy to explain.", "Good question. In short, it depends on the details.",
                   "Here's a brief overview.")  # fmt: skip
_PRONOUNS = ("it", "that", "this", "that stuff")
_FOLLOW = ("Thanks. ", "Interesting. ", "Okay, next question. ", "Got it. ", "", "")


@dataclass(frozen=True)
class ConversationConfig:
    """How many conversation variants to build."""

    rate: float = 0.0  # share of base requests that get one conversation variant (0: none)
    crescendo_share: float = 0.6  # the rest are split requests
    max_context_turns: int = 3
    seed: int = 0


def _entity_pattern(const: Constitution) -> re.Pattern[str] | None:
    names = sorted({e.strip() for c in const.categories for e in c.seeds.entities if len(e.strip()) >= 3}, key=len, reverse=True)
    if not names:
        return None
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(n) for n in names) + r")(?!\w)", re.IGNORECASE)


def _short_reply(responses: Sequence[str], rng: random.Random) -> str:
    if not responses or rng.random() < 0.25:  # generic replies at one rate, whatever the label
        return rng.choice(_REPLY_FALLBACK)
    ss = sentences(rng.choice(list(responses)))
    return " ".join(ss[: rng.choice((1, 2))]) or rng.choice(_REPLY_FALLBACK)


def _split_turns(text: str, rng: random.Random) -> list[Message] | None:
    words = text.split()
    if not words:
        return None
    sep = " "
    if len(words) == 1:  # Chinese and Japanese write no spaces: split the characters instead
        words, sep = list(text.strip()), ""
    n = max(2, min(rng.randint(2, 4), len(words)))
    size = -(-len(words) // n)
    chunks = [sep.join(words[i : i + size]) for i in range(0, len(words), size)]
    if len(chunks) < 2:
        return None
    msgs: list[Message] = []
    opener = rng.choice(_SPLIT_OPEN)
    acks = rng.random() < 0.5
    if opener:
        msgs += [Message(role="user", content=opener)] + ([Message(role="assistant", content="Okay.")] if acks else [])
    for i, c in enumerate(chunks):
        msgs.append(Message(role="user", content=c))
        if acks and i < len(chunks) - 1:
            msgs.append(Message(role="assistant", content=rng.choice(_ACKS)))
    close = rng.choice(_SPLIT_CLOSE)
    if close:
        if acks:
            msgs.append(Message(role="assistant", content=rng.choice(_ACKS)))
        msgs.append(Message(role="user", content=close))
    return msgs  # consecutive user turns stay separate messages: that is the point


def conversations(examples: Sequence[Example], const: Constitution, cfg: ConversationConfig) -> list[Example]:
    """Conversation variants of the base requests in ``examples`` (which carry their splits). Deterministic."""
    if cfg.rate <= 0:
        return []
    rng = random.Random(f"{cfg.seed}:conversations")
    cats = {c.id: c for c in const.categories}
    harmless_cats = {c.id for c in const.categories if c.kind == "harmless"}
    pattern = _entity_pattern(const)
    bases = [e for e in examples if not e.lineage and isinstance(e.prompt, str) and e.split and len(e.prompt.strip()) >= 2]
    # Context candidates: harmless base requests, per split, indexed by the entity they name and by category.
    by_entity: dict[tuple[str, str], list[Example]] = {}
    by_cat: dict[tuple[str, str], list[Example]] = {}
    for e in bases:
        if e.label != "harmless":
            continue
        by_cat.setdefault((e.split or "", e.category or ""), []).append(e)
        if pattern is not None and (e.category or "") in harmless_cats:
            for m in {m.group(1).lower() for m in pattern.finditer(e.prompt)}:  # type: ignore[arg-type]
                by_entity.setdefault((e.split or "", m), []).append(e)

    def neighbours(e: Example) -> list[str]:
        cat = cats[e.category or ""]
        own = [cat.id] if cat.kind == "harmless" else []
        return own + [n for n in cat.neighbours if n in harmless_cats]

    out: list[Example] = []
    for e in sorted(bases, key=lambda x: x.id):
        if rng.random() >= cfg.rate:
            continue
        text: str = e.prompt  # type: ignore[assignment]
        if rng.random() < cfg.crescendo_share:
            # Everyday requests have no seed answers for a build-up. They get no variant here rather than a split,
            # which would make splits lean harmless.
            if (e.category or "") not in cats:
                continue
            m = pattern.search(text) if pattern is not None else None
            entity = m.group(1).lower() if m else None
            pool = [c for c in by_entity.get((e.split or "", entity), []) if c.id != e.id] if entity else []
            named = bool(pool)
            if not pool:
                pool = [c for cid in neighbours(e) for c in by_cat.get((e.split or "", cid), []) if c.id != e.id]
            if not pool:
                continue
            k = rng.randint(1, cfg.max_context_turns)
            msgs: list[Message] = []
            for c in rng.sample(pool, min(k, len(pool))):
                msgs += [Message(role="user", content=c.prompt),  # type: ignore[arg-type]
                         Message(role="assistant", content=_short_reply(cats[c.category or ""].seeds.responses, rng))]
            last = text
            if named and m is not None and rng.random() < 0.6:
                last = text[: m.start()] + rng.choice(_PRONOUNS) + text[m.end() :]
            msgs.append(Message(role="user", content=rng.choice(_FOLLOW) + last))
            step = Step(name="crescendo", family="structure", args={"turns": len(msgs) // 2 + 1, "entity_named": named})
        else:
            split = _split_turns(text, rng)
            if split is None:
                continue
            msgs = split
            step = Step(name="turn_split", family="structure", args={"turns": sum(x.role == "user" for x in msgs)})
        out.append(e.model_copy(update={"id": stable_id(e.id, step.name, *(x.content for x in msgs)), "prompt": msgs,
                                        "parent_id": e.id, "lineage": [step]}))
    return out
