from pathlib import Path

import pytest
import yaml

from ccguard import constitution as C
from ccguard.errors import CcguardError


def test_bundled_cbrn_meets_the_seed_bank_bar():
    c = C.load("cbrn")
    assert len(c.harmful) >= 8 and len(c.harmless) >= len(c.harmful)
    for cat in c.categories:
        qs = cat.seeds.queries
        assert len(set(qs)) >= 40, cat.id
        assert any(any("\u4e00" <= ch <= "\u9fff" for ch in q) for q in qs), f"{cat.id}: no Chinese query"
    assert len(c.content_hash) == 64
    assert C.load("cbrn").content_hash == c.content_hash


def test_harmful_answer_phrases_also_occur_in_harmless_answers():
    """Issue 11 found phrasings that only harmful seed answers used, a shortcut like a placeholder token. Each one
    the harmful side uses must also occur in a compliant non-CBRN answer (the out-of-scope twins, design/017)."""
    c = C.load("cbrn")
    harmful = " ".join(r for cat in c.harmful for r in (*cat.seeds.responses, *cat.seeds.partial)).lower()
    out_of_scope = [r.lower() for cat in c.harmless if cat.id == "other_harms_out_of_scope" for r in cat.seeds.responses]
    for phrase in ("go further", "starting materials", "away from inspectors", "under the conditions",
                   "test a small amount", "scale anything up", "away from anyone who might come looking"):
        assert phrase in harmful, phrase
        assert any(phrase in r for r in out_of_scope), f"{phrase!r}: no compliant non-CBRN answer uses it"


def test_bundled_cbrn_has_the_required_neighbours():
    ids = {cat.id for cat in C.load("cbrn").categories}
    for needed in ("cooking", "history_policy", "homonyms", "nuclear_energy_isotopes", "fiction_without_specifics"):
        assert needed in ids


def _write(tmp_path: Path, data) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def _minimal() -> dict:
    return {
        "name": "mini",
        "description": "d",
        "categories": [
            {"id": "bad", "kind": "harmful", "title": "t", "description": "d", "seeds": {"queries": ["q1"]}},
            {"id": "ok", "kind": "harmless", "title": "t", "description": "d", "seeds": {"queries": ["q2"]}},
        ],
    }


def test_every_problem_is_reported_with_its_location(tmp_path):
    d = _minimal()
    d["categories"][0]["seeds"]["templates"] = ["no slot here"]
    d["categories"][1]["kind"] = "neutral"
    d["categories"][1]["colour"] = "red"
    problems = C.validation_problems(_write(tmp_path, d))
    text = "\n".join(problems)
    assert len(problems) >= 3
    assert "categories[0] (id=bad).seeds.templates" in text
    assert "categories[1] (id=ok).kind" in text
    assert "colour" in text


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = _write(tmp_path, "name: x\ncategories: [\n  - {id: a\n")
    (problem,) = C.validation_problems(p)
    assert "line" in problem and str(p) in problem


def test_load_raises_one_line_error(tmp_path):
    d = _minimal()
    d["categories"][1]["kind"] = "harmful"
    with pytest.raises(CcguardError) as e:
        C.load(_write(tmp_path, d))
    assert "harmful and one harmless" in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_unknown_name():
    with pytest.raises(CcguardError, match="not found"):
        C.load("/nonexistent/c.yaml")
    with pytest.raises(CcguardError, match="no bundled constitution"):
        C.load("nope")


def test_neighbour_templates_borrow_the_harmful_neighbours_entities_and_are_checked(tmp_path):
    d = _minimal()
    d["categories"][0]["seeds"]["entities"] = ["agent one", "agent two"]
    d["categories"][1]["seeds"]["neighbour_templates"] = ["What is the history of {entity}?"]
    # No harmful category names "ok" as its neighbour yet: nothing would fill the template.
    problems = C.validation_problems(_write(tmp_path, d))
    assert any("neighbour_templates" in p and "ok" in p for p in problems), problems
    d["categories"][0]["neighbours"] = ["ok"]
    c = C.load(_write(tmp_path, d))
    assert c.neighbour_entities("ok") == ["agent one", "agent two"] and c.neighbour_entities("bad") == []
    d["categories"][1]["seeds"]["neighbour_templates"] = ["no slot"]
    d["categories"][0]["seeds"]["neighbour_templates"] = ["Why {entity}?"]
    text = "\n".join(C.validation_problems(_write(tmp_path, d)))
    assert "categories[1] (id=ok).seeds.neighbour_templates" in text
    assert "categories[0] (id=bad)" in text and "harmful categories take no 'neighbour_templates'" in text


def test_intent_pairs_are_checked_with_their_location(tmp_path):
    d = _minimal()
    d["categories"][0]["seeds"]["entities"] = ["agent one"]
    d["categories"][0]["neighbours"] = ["ok"]
    pair = {"harmful": "How do I make {entity}?", "harmless": "How is {entity} detected?", "as": "ok"}
    d["categories"][0]["seeds"]["intent_pairs"] = [pair]
    c = C.load(_write(tmp_path, d))
    assert c.category("bad").seeds.intent_pairs[0].as_ == "ok"
    h = c.content_hash
    d["categories"][0]["seeds"]["intent_pairs"] = [dict(pair, harmless="How is it detected?")]
    text = "\n".join(C.validation_problems(_write(tmp_path, d)))
    assert "categories[0] (id=bad).seeds.intent_pairs[0]" in text and "'{entity}' once, or neither" in text
    d["categories"][0]["seeds"]["intent_pairs"] = [dict(pair, harmless=pair["harmful"])]
    assert "the two sides are the same request" in "\n".join(C.validation_problems(_write(tmp_path, d)))
    d["categories"][0]["seeds"]["intent_pairs"] = [dict(pair, **{"as": "bad"})]
    text = "\n".join(C.validation_problems(_write(tmp_path, d)))
    assert "categories[0] (id=bad)" in text and "not one of this category's neighbours (ok)" in text
    d["categories"][0]["seeds"]["intent_pairs"] = []
    d["categories"][1]["seeds"]["intent_pairs"] = [pair]
    text = "\n".join(C.validation_problems(_write(tmp_path, d)))
    assert "categories[1] (id=ok)" in text and "harmless categories take no 'intent_pairs'" in text
    # A pair changes the policy's hash; without pairs the field does not count.
    d["categories"][1]["seeds"]["intent_pairs"] = []
    assert C.load(_write(tmp_path, d)).content_hash != h


def test_a_constitution_without_neighbour_templates_keeps_its_hash(tmp_path):
    """The field came later: a constitution that does not use it hashes as before, so its runs stay current."""
    d = _minimal()
    c = C.load(_write(tmp_path, d))
    import hashlib
    import json

    dumped = c.model_dump(mode="json")
    for cat in dumped["categories"]:
        del cat["seeds"]["neighbour_templates"]
        del cat["seeds"]["intent_pairs"]
        del cat["seeds"]["crossed_templates"]
        del cat["seeds"]["crossed_entities"]
    old = hashlib.sha256(json.dumps(dumped, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert c.content_hash == old


def test_crossed_templates_take_harmless_fills_from_the_neighbours_and_are_checked(tmp_path):
    d = _minimal()
    d["categories"][0]["seeds"]["entities"] = ["agent one"]
    d["categories"][0]["seeds"]["crossed_templates"] = ["how would i make {entity} at home"]
    d["categories"][1]["seeds"]["crossed_entities"] = ["kombucha", "kombucha ", "a kite"]
    # "ok" is not a neighbour of "bad" yet: nothing would fill the harmless side.
    text = "\n".join(C.validation_problems(_write(tmp_path, d)))
    assert "category 'bad' has crossed_templates, but none of its harmless neighbours (none)" in text, text
    d["categories"][0]["neighbours"] = ["ok"]
    c = C.load(_write(tmp_path, d))
    assert c.crossed_neighbour_entities("bad") == [("kombucha", "ok"), ("a kite", "ok")]
    h = c.content_hash
    d["categories"][0]["seeds"]["crossed_templates"] = ["how would i make it at home"]
    text = "\n".join(C.validation_problems(_write(tmp_path, d)))
    assert "categories[0] (id=bad).seeds.crossed_templates" in text and "exactly once" in text
    d["categories"][0]["seeds"]["crossed_templates"] = []
    d["categories"][0]["seeds"]["crossed_entities"] = ["a kite"]
    d["categories"][1]["seeds"]["crossed_templates"] = ["where can i buy {entity}"]
    text = "\n".join(C.validation_problems(_write(tmp_path, d)))
    assert "categories[0] (id=bad)" in text and "harmful categories take no 'crossed_entities'" in text
    assert "categories[1] (id=ok)" in text and "harmless categories take no 'crossed_templates'" in text
    d["categories"][0]["seeds"]["crossed_entities"] = []
    d["categories"][1]["seeds"]["crossed_templates"] = []
    d["categories"][0]["seeds"]["entities"] = []
    d["categories"][0]["seeds"]["crossed_templates"] = ["where can i buy {entity}"]
    text = "\n".join(C.validation_problems(_write(tmp_path, d)))
    assert "categories[0] (id=bad)" in text and "need this category's 'entities'" in text
    # Crossed templates change the policy's hash; without them the fields do not count.
    d["categories"][0]["seeds"]["entities"] = ["agent one"]
    d["categories"][0]["seeds"]["crossed_templates"] = []
    assert C.load(_write(tmp_path, d)).content_hash != h
