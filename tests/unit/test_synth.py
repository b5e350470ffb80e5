from dataclasses import replace

from ccguard import constitution as C
from ccguard.synth import offline
from ccguard.synth.pool import load_pool
from ccguard.synth.voices import sentences as voices_sentences


def test_offline_generation_is_deterministic_and_labelled():
    c = C.load("cbrn")
    pool = load_pool("everyday")
    cfg = offline.SynthConfig(seed=3, queries_per_category=10, templates_per_category=4, pool_size=50)
    a = offline.generate(c, pool, cfg)
    b = offline.generate(c, pool, cfg)
    assert [e.id for e in a] == [e.id for e in b]
    assert len({e.id for e in a}) == len(a)
    kinds = {cat.id: cat.kind for cat in c.categories}
    for e in a:
        if e.source == "pool":
            assert e.label == "harmless"
        else:
            assert e.label == ("harmful" if kinds[e.category] == "harmful" else "harmless")
    assert sum(e.source == "template" for e in a) > 0 and sum(e.source == "pool" for e in a) == 50


def test_bundled_pool_is_large_and_diverse():
    pool = load_pool("everyday")
    texts = [r.text for d in pool.domains for r in d.requests]
    assert len(set(texts)) >= 400
    assert len(pool.domains) >= 8


def test_contextual_requests_follow_the_operational_context_flag():
    c = C.load("cbrn")
    ex = offline.generate(c, None, offline.SynthConfig(seed=1, contextual_per_category=3))
    ctx = [e for e in ex if e.source == "contextual" and e.parent_id is None]  # not the phrasing siblings
    cats = {cat.id: cat for cat in c.categories}
    assert {e.category for e in ctx} == {cid for cid, cat in cats.items() if cat.operational_context}
    assert not cats["fiction_without_specifics"].operational_context and all(cat.operational_context for cat in c.harmful)
    for e in ctx:
        cat = cats[e.category]
        assert any(r in e.prompt for r in cat.seeds.responses)
        assert e.label == ("harmful" if cat.kind == "harmful" else "harmless")
    assert sum(e.label == "harmful" for e in ctx) == 3 * len(c.harmful)


def test_conversations_keep_splits_labels_and_groups():
    from collections import Counter

    from ccguard.records import Message, assign_splits
    from ccguard.synth.conversations import ConversationConfig, conversations

    c = C.load("cbrn")
    base = assign_splits(offline.generate(c, load_pool("everyday"), offline.SynthConfig(seed=2)), seed=2)
    convs = conversations(base, c, ConversationConfig(rate=0.3, seed=2))
    assert convs == conversations(base, c, ConversationConfig(rate=0.3, seed=2))
    assert conversations(base, c, ConversationConfig(rate=0.0)) == []
    by_id = {e.id: e for e in base}
    split_of_text = {e.prompt: e.split for e in base if isinstance(e.prompt, str)}
    shapes = Counter((e.label, e.lineage[0].name) for e in convs)
    # Both shapes, on both labels: being a conversation says nothing about the label.
    assert min(shapes[(lab, s)] for lab in ("harmful", "harmless") for s in ("crescendo", "turn_split")) >= 20
    for e in convs:
        parent = by_id[e.parent_id]
        assert (e.label, e.group, e.split, e.base) == (parent.label, parent.group, parent.split, parent.base)
        assert isinstance(e.prompt, list) and all(isinstance(m, Message) for m in e.prompt)
        users = [m.content for m in e.prompt if m.role == "user"]
        assert len(users) >= 2 and e.prompt[-1].role == "user"
        if e.lineage[0].name == "crescendo":
            # Earlier turns are harmless requests of the same split: no text crosses a split.
            assert all(split_of_text.get(u) == e.split for u in users[:-1])
        else:
            squash = "".join("".join(users).split())
            assert "".join(parent.prompt.split()) in squash  # the request's words, in order, over the turns
    # Some harmful build-ups end in a turn that names the agent only as "it".
    parents = {e.id: e for e in base}
    assert any(e.label == "harmful" and e.lineage[0].name == "crescendo" and e.prompt[-1].content != parents[e.parent_id].prompt
               and not e.prompt[-1].content.endswith(parents[e.parent_id].prompt) for e in convs)
    # Everyday requests get no build-up (they have no seed answers), and nothing is split into one turn.
    assert not any(e.lineage[0].name == "crescendo" and (e.category or "").startswith("pool:") for e in convs)
    assert all(len(conversations([x.model_copy(update={"prompt": p})], c, ConversationConfig(rate=1.0, seed=s))) == 0
               for x in base[:1] for p in ("", " ", "?") for s in range(5))


def test_voices_split_cjk_and_skip_openers():
    import random

    from ccguard.synth.voices import sentences, voices

    assert sentences("好的。第一步，准备。第二步，做。") == ["好的。", "第一步，准备。", "第二步，做。"]
    # A closing quote or bracket after CJK end punctuation stays with its sentence.
    assert sentences("他说：「先准备。」然后做。（完成。）结束！") == ["他说：「先准备。」", "然后做。", "（完成。）", "结束！"]
    v = voices()
    answer = "Sure. Here is the plan. You preheat the oven and grease the tin. Then you bake the sponge until golden."
    for seed in range(8):
        out = v["terse"](answer, "q", random.Random(seed))
        assert out.startswith("You preheat the oven"), out
    assert v["terse"]("Sure. Okay!", "q", random.Random(0)) == ""  # nothing but openers: the variant is dropped
    md = v["markdown_sections"](answer, "q", random.Random(1))
    assert ("**" in md or "###" in md) and "preheat the oven" in md and "bake the sponge" in md


def test_amount_echo_is_label_blind_and_adds_no_content():
    from collections import Counter

    from ccguard.synth.responses import _ECHO_AMOUNT, AMOUNTS, ResponseConfig, generate_responses

    c = C.load("cbrn")
    rows = generate_responses(c, None, ResponseConfig(seed=1, queries_per_response=1, voice_variants=3, amount_rate=0.3))
    amount = [e for e in rows if any(s.name == "answer_amount" for s in e.lineage)]
    by_label = Counter(e.label for e in amount)
    assert by_label["harmful"] >= 30 and by_label["harmless"] >= 30
    for e in amount:
        a = next(x for x in AMOUNTS if x in e.prompt)
        echo = next(t.format(a=a, A=a[:1].upper() + a[1:]) for t in _ECHO_AMOUNT if e.response.startswith(t.format(a=a, A=a[:1].upper() + a[1:])))
        # The answer repeats the amount the request named, once, in the echo, and nothing else of it.
        assert e.response.lower().count(a.lower()) == 1 and a.lower() in echo.lower()
    none = generate_responses(c, None, ResponseConfig(seed=1, queries_per_response=1, voice_variants=3))
    assert not any(s.name == "answer_amount" for e in none for s in e.lineage)


def test_lead_ins_are_label_blind_topic_free_and_record_where_the_answer_begins():
    from collections import Counter

    from ccguard.synth.responses import PREAMBLE_STEP, ResponseConfig, answer_start, generate_responses

    c = C.load("cbrn")
    cfg = ResponseConfig(seed=2, queries_per_response=1, voice_variants=2)
    plain = generate_responses(c, None, cfg)
    rows = generate_responses(c, None, replace(cfg, preamble_rate=0.3))
    # Lead-ins only add copies: every other exchange is the same, in the same order.
    assert rows[: len(plain)] == plain
    led = rows[len(plain) :]
    assert led and all(e.lineage[-1].name == PREAMBLE_STEP for e in led)
    share = {y: n / sum(e.label == y for e in plain) for y, n in Counter(e.label for e in led).items()}
    assert set(share) == {"harmful", "harmless"} and all(0.2 < x < 0.4 for x in share.values())
    parents = {e.id: e for e in plain}
    terms = [t.lower() for t in c.harmful_terms() if len(t) >= 5]
    for e in led:
        parent = parents[e.parent_id]
        at = answer_start(e)
        assert at > 0 and e.response[at:] == parent.response and e.group == parent.group and e.label == parent.label
        lead = e.response[:at].lower()
        assert lead.endswith("\n\n") and not any(t in lead for t in terms), lead
    assert answer_start(plain[0]) == 0
    assert len({e.lineage[-1].args["kind"] for e in led}) >= 6


def test_context_puts_neighbour_prose_from_the_same_split_before_answers_of_either_label():
    from collections import Counter

    from ccguard.records import assign_splits
    from ccguard.synth import responses as R

    c = C.load("cbrn")
    rows = assign_splits(R.generate_responses(c, None, R.ResponseConfig(seed=3, queries_per_response=1, voice_variants=1,
                                                                    preamble_rate=0.2)), seed=3)
    rows += R.compose(rows, 0.5, 3)
    assert R.with_context(rows, c, 0.0, 3) == []
    added = R.with_context(rows, c, 0.3, 3)
    assert added == R.with_context(rows, c, 0.3, 3)  # deterministic
    # Label-blind: about the same share of each label's exchanges gets a copy, refusals included.
    eligible = [e for e in rows if not any(s.name in (R.PREAMBLE_STEP, R.COMPOSE_STEP) for s in e.lineage)]
    share = {y: n / sum(e.label == y for e in eligible) for y, n in Counter(e.label for e in added).items()}
    assert set(share) == {"harmful", "harmless"} and all(0.2 < x < 0.4 for x in share.values()), share
    assert any(e.source == "seed_refusal" for e in added)
    parents = {e.id: e for e in rows}
    kind = {k.id: k for k in c.categories}
    prose = {(e.split, e.response): e.category for e in rows if e.source == "seed_helpful" and not e.lineage}
    for e in added:
        parent = parents[e.parent_id]
        step = e.lineage[-1]
        assert step.name == R.CONTEXT_STEP and e.lineage[:-1] == parent.lineage
        assert (e.label, e.group, e.split, e.prompt) == (parent.label, parent.group, parent.split, parent.prompt)
        text, rest = e.response[: step.args["wrapper"]], e.response[step.args["wrapper"] :]
        assert text.endswith("\n\n") and rest == parent.response
        # The loss of a harmful copy starts where the parent's own substance does.
        assert R.substance_start(e) == step.args["wrapper"] + R.substance_start(parent)
        # The prose is a harmless answer of the same split, from a neighbour of the exchange's harmful category (or,
        # for a harmless exchange, of a harmful category it neighbours).
        source = prose[(e.split, text[:-2])]
        assert kind[source].kind == "harmless" and text[:-2] != parent.response
        harmful = [parent.category] if kind[parent.category].kind == "harmful" else [
            h.id for h in c.categories if h.kind == "harmful" and parent.category in h.neighbours]
        assert any(source in kind[h].neighbours for h in harmful), (parent.category, source)


def test_voices_record_the_wrapper_before_the_seed_text_and_the_substance_follows_it():
    from collections import Counter

    from ccguard.synth.responses import ResponseConfig, generate_responses, substance_start
    from ccguard.synth.voices import _strip_opener, third_person

    c = C.load("cbrn")
    rows = generate_responses(c, None, ResponseConfig(seed=1, queries_per_response=1, voice_variants=3, amount_rate=0.3,
                                                      augment_rate=0.5, preamble_rate=0.2))
    parents = {e.id: e for e in rows}
    voiced = [e for e in rows if e.lineage and e.lineage[0].name.startswith("voice_") and e.lineage[0].name != "voice_terse"]
    wrapped, checked, found = Counter(), 0, 0
    for e in voiced:
        at = substance_start(e)
        wrapped[e.lineage[0].name] += at > 0
        # Where the seed's first long sentence (opener stripped) appears in the variant, the substance starts there.
        root = e
        while root.lineage:
            root = parents[root.parent_id]
        first = [_strip_opener(x) for x in voices_sentences(root.response) if len(x.split()) > 4][:1]
        probes = [p[:20].lower() for p in (first[0], third_person(first[0]))] if first else []
        if any(p in e.response.lower() for p in probes):
            checked += 1
            found += any(e.response[at:].lower().startswith(p) for p in probes)
    totals = Counter(e.lineage[0].name for e in voiced)
    # Every voice but encyclopedic (whose heading may be empty) wraps the seed text.
    assert all(wrapped[n] > 0.9 * k for n, k in totals.items() if n != "voice_encyclopedic"), wrapped
    assert checked > 0.7 * len(voiced) and found > 0.97 * checked, (checked, found, len(voiced))
    # A story frame records its wrapper too; an answer that is not wrapped records none.
    story = [e for e in rows if e.lineage and e.lineage[-1].name == "answer_in_story"]
    assert story and all(e.response[substance_start(e):].lower().startswith(
        _strip_opener(voices_sentences(parents[e.parent_id].response)[0])[:20].lower()) for e in story
        if len(voices_sentences(parents[e.parent_id].response)[0].split()) > 4)
    assert all(substance_start(e) == 0 for e in rows if not e.lineage)


def test_a_recapitalised_seed_sentence_is_found_at_its_own_offset_after_characters_that_lower_case_longer():
    from ccguard.synth.voices import wrapper_chars

    original = "the whole thing comes down to patience and a steady routine over many weeks."
    wrapper = "İstanbul notes, İtem 4 — "  # "İ".lower() is two characters
    text = wrapper + "The whole thing comes down to patience and a steady routine over many weeks."
    assert wrapper_chars(text, original) == len(wrapper)


def test_neighbour_templates_ask_harmless_questions_about_the_harmful_neighbours_agents():
    c = C.load("cbrn")
    cfg = offline.SynthConfig(seed=5, neighbour_fills=3)
    rows = [e for e in offline.generate(c, None, cfg) if e.source == "neighbour"]
    by_cat: dict[str, list] = {}
    for e in rows:
        by_cat.setdefault(e.category, []).append(e)
    for cat in c.harmless:
        n = len(cat.seeds.neighbour_templates)
        assert len(by_cat.get(cat.id, [])) == 3 * n, cat.id
    assert rows and all(e.label == "harmless" for e in rows)
    entities = {e for cat in c.harmful for e in cat.seeds.entities}
    for e in rows:
        # Every question names an entity of a harmful category that lists this category as its neighbour.
        allowed = set(c.neighbour_entities(e.category))
        assert any(ent in e.prompt for ent in allowed), e.prompt
        assert allowed <= entities
    # All fills of one template share a group, so a split never sees a template on both sides.
    groups: dict[str, set[str]] = {}
    for e in rows:
        groups.setdefault(e.group, set()).add(e.category)
    assert all(len(v) == 1 for v in groups.values()) and len(groups) == len(rows) // 3
    # Off by default: the generator adds none.
    assert not [e for e in offline.generate(c, None, offline.SynthConfig(seed=5)) if e.source == "neighbour"]


def _fill(template: str, text: str) -> tuple[bool, str | None]:
    """Whether ``text`` is a fill of ``template``, and with which entity (None for a template without a slot)."""
    if "{entity}" not in template:
        return template == text, None
    head, tail = template.split("{entity}")
    ok = text.startswith(head) and text.endswith(tail) and len(text) > len(head) + len(tail)
    return ok, text[len(head):len(text) - len(tail)] if ok else None


def test_intent_pairs_fill_both_sides_with_the_same_agent_in_one_group():
    c = C.load("cbrn")
    pairs = [(cat, p) for cat in c.harmful for p in cat.seeds.intent_pairs]
    assert len(pairs) >= 40
    rows = [e for e in offline.generate(c, None, offline.SynthConfig(seed=3, pair_fills=2)) if e.source == "pair"]
    groups: dict[str, list] = {}
    for e in rows:
        groups.setdefault(e.group, []).append(e)
    n_slots = sum(1 for _, p in pairs if "{entity}" in p.harmful)
    assert len(groups) == len(pairs) and len(rows) == 2 * (2 * n_slots + len(pairs) - n_slots)
    for members in groups.values():
        harmful = [e for e in members if e.label == "harmful"]
        harmless = [e for e in members if e.label == "harmless"]
        assert len(harmful) == len(harmless) in (1, 2)
        for h in harmful:
            cat, pair = next((cat, p) for cat, p in pairs if cat.id == h.category and _fill(p.harmful, h.prompt)[0])
            ent = _fill(pair.harmful, h.prompt)[1]
            assert ent is None or ent in cat.seeds.entities
            # Its twin is the same pair's harmless side, with the same agent, labelled with the named neighbour.
            twin = pair.harmless if ent is None else pair.harmless.replace("{entity}", ent)
            assert [e.category for e in harmless if e.prompt == twin] == [pair.as_]
    # Off unless asked for.
    assert not [e for e in offline.generate(c, None, offline.SynthConfig(seed=3)) if e.source == "pair"]


def test_crossed_templates_ask_the_same_thing_of_an_agent_and_of_an_everyday_thing_in_one_group():
    c = C.load("cbrn")
    cfg = offline.SynthConfig(seed=2, crossed_fills=2, crossed_harmless_fills=3)
    rows = [e for e in offline.generate(c, None, cfg) if e.source == "crossed"]
    templates = [(cat, t) for cat in c.harmful for t in cat.seeds.crossed_templates]
    assert len(templates) >= 40
    groups: dict[str, list] = {}
    for e in rows:
        groups.setdefault(e.group, []).append(e)
    assert len(groups) == len(templates) and len(rows) == 5 * len(templates)
    kind = {cat.id: cat.kind for cat in c.categories}
    for members in groups.values():
        harmful = [e for e in members if e.label == "harmful"]
        harmless = [e for e in members if e.label == "harmless"]
        assert len(harmful) == 2 and len(harmless) == 3
        cat, tpl = next((cat, t) for cat, t in templates if cat.id == harmful[0].category and _fill(t, harmful[0].prompt)[0])
        # The harmful side names the category's own agents; the harmless side, in the same frame, an everyday thing
        # of one of its harmless neighbours, and takes that neighbour's label and id.
        assert all(_fill(tpl, e.prompt)[1] in cat.seeds.entities for e in harmful)
        fills = dict(c.crossed_neighbour_entities(cat.id))
        for e in harmless:
            ent = _fill(tpl, e.prompt)[1]
            assert fills[ent] == e.category and kind[e.category] == "harmless" and e.category in cat.neighbours
    # Off unless asked for.
    assert not [e for e in offline.generate(c, None, offline.SynthConfig(seed=2)) if e.source == "crossed"]


def test_the_data_fingerprint_covers_the_generators_code_and_banks(tmp_path):
    # Editing a lead-in bank, a voice or a transform must rebuild an existing run's data, not reuse it.
    import shutil
    from pathlib import Path

    from ccguard.synth import build

    pkg = Path(build.__file__).resolve().parents[1]
    root = tmp_path / "ccguard"
    for part in build._GENERATOR_PARTS:
        src = pkg / part
        (shutil.copy2 if src.is_file() else shutil.copytree)(src, root / part)
    before = build.generator_sha(root)
    assert before == build.generator_sha(root) == build.generator_sha(pkg)
    bank = root / "synth" / "preambles.py"
    bank.write_text(bank.read_text(encoding="utf-8").replace('"Let\'s not waste time."', '"Let us begin."'),
                    encoding="utf-8")
    assert build.generator_sha(root) != before
    (root / "synth" / "preambles.py").write_bytes((pkg / "synth" / "preambles.py").read_bytes())
    assert build.generator_sha(root) == before
    (root / "data" / "framings.yaml").write_text("changed: true\n", encoding="utf-8")
    assert build.generator_sha(root) != before
