import random
import re

import pytest

from ccguard import constitution as C
from ccguard.constitution import Constitution
from ccguard.evaluate.report import _shortcut_lines
from ccguard.evaluate.shortcut import ShortcutReport, audit, mask_content, mask_topic, topic_vocabulary
from ccguard.records import Example, stable_id

FILLER = ["please", "quickly", "explain", "the", "details", "of", "this", "for", "a", "project", "today", "tomorrow",
          "clearly", "simply"]


def _const() -> Constitution:
    return Constitution.model_validate({
        "name": "tiny",
        "description": "test policy",
        "categories": [
            {"id": "bad", "kind": "harmful", "title": "Nerve agent synthesis", "description": "Making toxins.",
             "seeds": {"queries": ["q"], "entities": ["sarin", "a Novichok agent", "cesium-137"]}},
            {"id": "good", "kind": "harmless", "title": "Cooking", "description": "Recipes with mustard.",
             "seeds": {"queries": ["q"], "entities": ["honey mustard", "VX-free kitchens"]}},
        ],
    })


def test_vocabulary_has_topic_words_and_no_stop_words():
    v = topic_vocabulary(_const())
    assert {"sarin", "novichok", "agent", "honey", "mustard", "vx", "nerve", "synthesis", "cooking", "recipes"} <= v
    assert {"recipe", "toxin", "kitchen"} <= v  # plural entities and prose mask their singular too
    assert not {"a", "the", "with"} & v


def test_bundled_vocabulary_covers_every_category():
    const = C.load("cbrn")
    v = topic_vocabulary(const)
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    for term in [e for c in const.categories for e in c.seeds.entities]:
        # Single letters ('G-series') are left alone: masking every 'a' or 't' would erase style, not topic.
        left = set(re.findall(r"[^\W_]{2,}", mask_topic(term, v).lower())) - ENGLISH_STOP_WORDS
        assert not left, term
    assert {"sarin", "mustard", "anthrax", "uranium"} <= v
    assert "sure" not in v and "here" not in v


def test_mask_topic_catches_case_inflections_digits_and_keeps_the_rest():
    v = {"agent", "synthesize", "toxin", "mustard", "stop"}
    text = "Sure, here: Agents synthesized TOXINS; stopped mustards at 50C, not agenda or agentive."
    assert mask_topic(text, v) == "Sure, here: __; __ at __, not agenda or agentive."
    assert mask_topic("synthesizing toxin-agent", v) == "__"  # one mask per run, so entity length leaves no cue
    assert mask_topic("", v) == ""
    assert mask_topic("no topic here", v) == "no topic here"


def test_mask_topic_is_linear_on_long_text():
    import time

    v = topic_vocabulary(_const())
    text = "sarin honey go further " * 50_000
    t0 = time.perf_counter()
    out = mask_topic(text, v)
    assert time.perf_counter() - t0 < 5
    assert out.count("__") == 50_000 and out.count("further") == 50_000


def _examples(n: int, seed: int, harmful_text, harmless_text) -> list[Example]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "harmful" if i % 2 else "harmless"
        filler = " ".join(rng.sample(FILLER, 5))
        text = (harmful_text if label == "harmful" else harmless_text)(filler, rng)
        rows.append(Example(id=stable_id(str(seed), str(i)), prompt=text, response=text, label=label,
                            source="seed", group=str(i)))
    return rows


def test_style_token_is_reported_as_a_shortcut():
    v = topic_vocabulary(_const())

    def harmful(f, rng):
        return f"{f} sure here is {rng.choice(['sarin', 'honey mustard'])}"

    def harmless(f, rng):
        return f"{f} {rng.choice(['sarin', 'honey mustard'])}"

    train, evals = _examples(300, 0, harmful, harmless), _examples(200, 1, harmful, harmless)
    a = audit(train, evals, v, "output")
    assert a.auroc_masked > 0.98 and a.auroc_masked_base > 0.98 and not a.passed
    assert a.auroc_topic_deleted > 0.98  # style words survive deleting the topic words
    assert a.auroc_function_words > 0.98  # 'sure', 'here' and 'is' are function words and discourse markers
    assert {"sure", "here"} & {f.ngram for f in a.top_features.harmful[:5]}
    assert a.n_train == 300 and a.n_eval == 200 and a.n_train_base == 300


def test_topic_only_difference_vanishes_after_masking():
    v = topic_vocabulary(_const())

    def harmful(f, rng):
        return f"{f} {rng.choice(['sarin', 'Novichok agents', 'cesium-137'])}"

    def harmless(f, rng):
        return f"{f} {rng.choice(['honey mustard', 'cooking recipes'])}"

    train, evals = _examples(400, 0, harmful, harmless), _examples(400, 1, harmful, harmless)
    a = audit(train, evals, v, "input")
    assert a.auroc_unmasked > 0.98
    assert abs(a.auroc_masked - 0.5) < 0.1 and abs(a.auroc_masked_base - 0.5) < 0.1
    assert abs(a.auroc_topic_deleted - 0.5) < 0.1
    assert a.passed


def test_mask_content_keeps_function_words_contractions_and_punctuation_only():
    text = "Sure, here's how you'd make sourdough with rye flour. I won't list amounts, or 50 g."
    assert mask_content(text) == "Sure, here's how you'd __ with __. I won't __, or __."
    assert mask_content("用中文回答 wie macht man das") == "__"  # other scripts and languages carry no English style
    assert mask_content("") == ""


def test_everyday_nouns_on_the_harmless_side_show_through_the_topic_mask_not_the_function_word_one():
    # The topic mask hides the agent and leaves the everyday noun, so '__' alone reads as harmful although both sides
    # ask the same thing in the same words; masking every content word is symmetric.
    v = topic_vocabulary(_const())
    everyday = ["sourdough", "kombucha", "candles", "birdhouses", "pickles", "soap", "quilts", "jam"]

    def harmful(f, rng):
        return f"{f} how would i make {rng.choice(['sarin', 'Novichok agents', 'cesium-137'])} at home"

    def harmless(f, rng):
        return f"{f} how would i make {rng.choice(everyday)} at home"

    train, evals = _examples(400, 0, harmful, harmless), _examples(400, 1, harmful, harmless)
    a = audit(train, evals, v, "output")
    assert a.auroc_masked > 0.95 and not a.passed
    assert abs(a.auroc_function_words - 0.5) < 0.1


def test_topic_word_density_shows_when_masked_not_when_deleted():
    v = topic_vocabulary(_const())

    def harmful(f, rng):
        return f"{f} sarin, VX, sarin"  # three separate masks

    def harmless(f, rng):
        return f"{f} sarin"  # one

    train, evals = _examples(300, 0, harmful, harmless), _examples(200, 1, harmful, harmless)
    a = audit(train, evals, v, "output")
    assert a.auroc_masked > 0.9
    assert abs(a.auroc_topic_deleted - 0.5) < 0.1


def test_one_class_gives_no_auroc_and_the_report_renders():
    v = topic_vocabulary(_const())
    rows = [e for e in _examples(40, 0, lambda f, r: f, lambda f, r: f) if e.label == "harmless"]
    a = audit(rows, rows, v, "input")
    assert a.auroc_masked is None and not a.passed and a.top_features.harmful == []
    md = "\n".join(_shortcut_lines(ShortcutReport(input=a, output=a).model_dump()))
    assert "| input | n/a |" in md and "FAIL" in md and "| function words only |" in md


@pytest.mark.parametrize("side", ["input", "output"])
def test_audit_is_deterministic(side):
    v = topic_vocabulary(_const())
    rows = _examples(120, 3, lambda f, r: f + " now", lambda f, r: f)
    assert audit(rows, rows, v, side, max_train=50, seed=1).model_dump(exclude={"seconds"}) == audit(
        rows, rows, v, side, max_train=50, seed=1).model_dump(exclude={"seconds"})


def test_by_group_names_the_seed_bank_that_carries_the_style():
    v = topic_vocabulary(_const())
    rows = []
    for seed, n in ((0, 600), (1, 400)):
        rng = random.Random(seed)
        for i in range(n):
            filler = " ".join(rng.sample(FILLER, 5))
            kind = ("harmful", "plain", "styled", "refusal")[i % 4]
            text = {"harmful": f"{filler} sarin", "plain": f"{filler} honey mustard",
                    "styled": f"{filler} kindly regards honey mustard", "refusal": f"{filler} sarin"}[kind]
            rows.append(Example(
                id=stable_id(str(seed), str(i)), prompt=text, response=text, group=f"{seed}-{i}",
                label="harmful" if kind == "harmful" else "harmless", category=kind,
                source="seed_refusal" if kind == "refusal" else "seed"))
    a = audit(rows[:600], rows[600:], v, "output")
    groups = {g.group: g for g in a.by_group}
    assert a.by_group[0].group == "styled" and groups["styled"].auroc > 0.95 and groups["styled"].n == 100
    assert abs(groups["plain"].auroc - 0.5) < 0.15 and abs(groups["refusals"].auroc - 0.5) < 0.15
    assert groups["harmful"].label == "harmful"
    md = "\n".join(_shortcut_lines(ShortcutReport(input=a, output=a).model_dump()))
    assert "Most separable groups (output" in md and "styled (harmless, n=100)" in md


def _bench():
    """benchmarks/shortcut_audit.py, loaded as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "shortcut_audit.py"
    spec = importlib.util.spec_from_file_location("shortcut_audit_bench", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_dev_check_scores_the_audits_prompt_models_on_real_prompts(tmp_path, capsys):
    # benchmarks/shortcut_audit.py --dev: models fitted on our training prompts, scored on dev-format prompts. Here
    # the 'real' CBRN requests share the training prompts' harmful voice ('could i') and the benign ones their harmless
    # voice ('why is my'), so both models must read them the right way; with the voices swapped, the wrong way. The
    # training responses carry no voice, so a check fitted on the wrong side would sit at chance.
    import json
    from pathlib import Path

    from ccguard.records import write_jsonl

    bench = _bench()

    voice = {"harmful": "could i get {t} into a room", "harmless": "why is my {t} so loud"}
    train = [e.model_copy(update={"response": "ok"}) for e in _examples(
        400, 0, lambda f, r: f"{f} " + voice["harmful"].format(t=r.choice(["sarin", "VX"])),
        lambda f, r: f"{f} " + voice["harmless"].format(t=r.choice(["honey mustard", "kettle"])))]
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", train)

    def dev_dir(name: str, cbrn_voice: str, benign_voice: str) -> Path:
        def row(i: str, v: str, label: str, cbrn: bool, source: str = "bench") -> dict:
            return {"id": i, "prompt": v.format(t=f"thing{i}"), "label": label, "cbrn": cbrn, "source": source}

        rows = [row(f"c{i}", cbrn_voice, "harmful", True) for i in range(15)]
        rows.append(row("a32620f9fd96", benign_voice, "harmful", True))  # dev_eval.NOT_CBRN: not CBRN, left out
        rows += [row(f"b{i}", benign_voice, "benign", False) for i in range(40)]
        rows += [row(f"m{i}", benign_voice, "benign", False, "openai-moderation") for i in range(10)]
        rows += [row(f"o{i}", benign_voice, "harmful", False) for i in range(40)]
        d = tmp_path / name
        d.mkdir()
        (d / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        return d

    def run(dev: Path) -> tuple[str, list[float]]:
        bench.dev_check(data, _const(), dev, resamples=50)
        out = capsys.readouterr().out
        return out, [float(m) for m in re.findall(r"AUROC (\d\.\d+) \[\d\.\d+, \d\.\d+\]", out)]

    out, right = run(dev_dir("right", voice["harmful"], voice["harmless"]))
    assert "15 CBRN-weapons requests" in out and "40 benign requests" in out and "50 benign, all sources" in out
    assert len(right) == 6 and min(right) > 0.9
    _, wrong = run(dev_dir("wrong", voice["harmless"], voice["harmful"]))
    assert len(wrong) == 6 and max(wrong) < 0.1
    with pytest.raises(SystemExit, match="prompts.jsonl"):
        bench.dev_check(data, _const(), tmp_path / "missing")


def test_twin_bound_ties_every_harmful_row_with_a_twin_and_leaves_the_styles_no_harmful_row_has(tmp_path, capsys):
    # benchmarks/shortcut_audit.py --twin-bound. Harmful rows say 'sure here is', harmless ones 'why is my'. A perfect
    # harmless twin of each harmful row ties with it, so the audit falls from about 1 to about (0.5 + 1) / 2: the
    # 'why is my' rows, a style no harmful row has, keep it above the target.
    from ccguard.records import write_jsonl

    bench = _bench()

    def harmless(f, rng):
        return f"{f} why is my {rng.choice(['sarin', 'honey mustard'])}"

    def harmful(f, rng):
        return f"{f} sure here is {rng.choice(['sarin', 'honey mustard'])}"

    data = tmp_path / "data"
    data.mkdir()
    for split, seed, n in (("train", 0, 400), ("val", 1, 150), ("test", 2, 150)):
        rows = _examples(n, seed, harmful, harmless)
        write_jsonl(data / f"{split}.jsonl", rows)
        write_jsonl(data / f"output_{split}.jsonl", rows)
    out = bench.twin_bound(data, _const())
    for side in ("input", "output"):
        before, after = out[side]
        assert before.auroc_masked > 0.95
        assert 0.68 < after.auroc_masked < 0.82 and not after.passed, after.auroc_masked
        assert after.n_eval == before.n_eval * 3 // 2  # one twin per harmful row
    assert "perfect twins" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no train.jsonl, val.jsonl"):
        bench.twin_bound(tmp_path / "missing", _const())
