"""Contract tests over every registered transform: loads, runs, deterministic under a seed, documented."""

import random
import re

import pytest

from ccguard.records import Message, render_prompt
from ccguard.registry import REGISTRY
from ccguard.transforms.base import TransformContext, build, load_framings
from ccguard.views import decoded_views

FRAMINGS = load_framings()
POOL = (("What is 2+2?", "4."), ("Name a primary colour.", "Red."))
SAMPLE = "Explain how vaccines train the immune system to recognise a virus"
NAMES = REGISTRY.names("transform")


def ctx(seed: int = 0) -> TransformContext:
    return TransformContext(rng=random.Random(seed), terms=("vaccines",), pool=POOL, framings=FRAMINGS)


def test_enough_transforms_in_every_family():
    fams = {REGISTRY.get("transform", n).meta["family"] for n in NAMES}
    assert len(NAMES) >= 25
    assert {"encoding", "style", "framing", "structure", "keyword"} <= fams
    assert {"paraphrase", "translate", "persona_rewrite", "decompose"} <= set(REGISTRY.names("llm_transform"))


def test_llm_transforms_need_a_backend():
    from ccguard.errors import CcguardError

    with pytest.raises(CcguardError, match="needs an LLM backend"):
        build("paraphrase")


@pytest.mark.parametrize("name", NAMES)
def test_transform_contract(name):
    entry = REGISTRY.get("transform", name)
    assert entry.doc, f"{name} has no docstring"
    t = build(name)
    out1 = t(SAMPLE, ctx(7))
    out2 = t(SAMPLE, ctx(7))
    assert render_prompt(out1) == render_prompt(out2), "not deterministic under a seed"
    assert render_prompt(out1) != SAMPLE, "transform did nothing"
    chat = [Message(role="system", content="sys"), Message(role="user", content=SAMPLE)]
    out_chat = t(chat, ctx(7))
    assert isinstance(out_chat, list) and out_chat[0].content == "sys"
    assert t.step.name == name and t.step.family == entry.meta["family"]


def _letters(s: str) -> str:
    return re.sub(r"[^a-z]", "", s.lower())


@pytest.mark.parametrize("name", [n for n in NAMES if REGISTRY.get("transform", n).meta.get("reversible")])
def test_reversible_transforms_are_undone_by_decoded_views(name):
    out = build(name)(SAMPLE, ctx(3))
    views = decoded_views(render_prompt(out))
    assert len(views) > 1, f"no decoder fired for {name}"
    assert _letters(SAMPLE) in _letters(views[-1].text)


def test_views_leave_ordinary_text_alone():
    from ccguard.synth.pool import load_pool
    from ccguard.views import _B64, _BIN, _HEX

    # Requests that carry an encoded blob (a base64 config value, a hex dump) are decoded on purpose.
    texts = [r.text for d in load_pool("everyday").domains for r in d.requests]
    texts = [t for t in texts if not any(p.search(t) for p in (_B64, _HEX, _BIN))]
    changed = [t for t in texts if len(decoded_views(t)) > 1]
    # Every extra view is a full extra scoring pass (and one more chance of a false positive).
    assert len(changed) / len(texts) < 0.01, changed


@pytest.mark.parametrize(
    "text",
    [
        "Hello! Can you summarise chapter 2 for me? Thanks!",
        "Meet me on the 2nd at 10am; bring the mp3 files and the 4K monitor.",
        "Balance H2SO4 + NaOH and explain why CO2 is released.",
        "Mail bob@example.com or see https://example.org/a1b2c3 for the slides.",
        "请解释一下光合作用，好吗？",
        "Wait… the café costs 1½ times more.",
        "Москва — столица России.",
    ],
)
def test_ordinary_text_gets_no_decoded_view(text):
    assert [v.name for v in decoded_views(text)] == ["raw"]


def test_leetspeak_view_decodes_edge_digits_once_a_text_is_leetspeak():
    views = decoded_views("h0w d0 1 m4k3 7h15 w0rk, st3p by st3p")
    assert views[-1].text == "how do i make this work, step by step"


def test_augment_is_deterministic_and_keeps_lineage():
    from ccguard.augment import AugmentConfig, augment
    from ccguard.records import Example

    base = [Example(id=f"b{i}", prompt=f"{SAMPLE} number {i}", label="harmless", source="seed", group=f"g{i}", base=SAMPLE) for i in range(30)]
    a = augment(base, ctx(), AugmentConfig(seed=5))
    b = augment(base, ctx(), AugmentConfig(seed=5))
    assert [e.model_dump() for e in a] == [e.model_dump() for e in b]
    derived = [e for e in a if e.lineage]
    assert derived and all(e.parent_id and e.group == f"g{e.parent_id[1:]}" for e in derived)
    assert all(1 <= len(e.lineage) <= 3 for e in derived)
