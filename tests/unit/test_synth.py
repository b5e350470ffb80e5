from ccguard import constitution as C
from ccguard.synth import offline
from ccguard.synth.pool import load_pool


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
