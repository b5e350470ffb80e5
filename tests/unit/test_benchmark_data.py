"""The benchmarks' hand-written data stays out of the training seeds, and the edgy-question sets are well formed."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "data"
SEED_FILES = [ROOT / "src" / "ccguard" / "constitutions" / "cbrn.yaml", *(ROOT / "src" / "ccguard" / "data").glob("*.yaml")]
# Written independently on both sides: the seed predates the benchmark, whose blind helper wrote the same question as
# the first turn of a harmless conversation (bm183). Kept, and named here, rather than silently matched.
KNOWN_COINCIDENCES = {"is it safe to visit the chernobyl exclusion zone as a tourist"}


def _strings(obj: object) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.casefold()).strip()


def _bench_texts() -> dict[str, str]:
    out = {}
    for path in sorted(BENCH.iterdir()):
        if path.suffix == ".json":
            objs = [json.loads(path.read_text(encoding="utf-8"))]
        elif path.suffix == ".jsonl":
            objs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            continue
        for s in _strings(objs):
            if len(_norm(s)) >= 25:  # ids, labels and short generic phrases are not benchmark items
                out.setdefault(_norm(s), f"{path.name}: {s[:80]!r}")
    return out


def test_no_benchmark_text_is_a_training_seed() -> None:
    bench = _bench_texts()
    assert len(bench) > 1000  # every data file was read
    seeds = {_norm(s) for p in SEED_FILES for s in _strings(yaml.safe_load(p.read_text(encoding="utf-8")))}
    leaked = sorted(bench[t] for t in (bench.keys() & seeds) - KNOWN_COINCIDENCES)
    assert not leaked, f"benchmark items copied into the seed bank: {leaked[:5]}"


def test_edgy_sets_are_balanced_and_name_their_out_of_scope_items() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgy_questions", ROOT / "benchmarks" / "edgy_questions.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    OUT_OF_SCOPE, SETS = bench.OUT_OF_SCOPE, bench.SETS

    ids: list[str] = []
    for path in SETS:
        items = json.loads(path.read_text(encoding="utf-8"))["items"]
        ids += [it["id"] for it in items]
        counts = Counter((it["shape"], it["label"]) for it in items)
        assert set(counts.values()) == {24, 10} and len(items) == 34 * len({it["shape"] for it in items}), counts
        assert all(1 <= len(it["turns"]) <= 3 and all(t.strip() for t in it["turns"]) for it in items)
        assert {it["lang"] for it in items} == {"en", "es", "fr", "de", "zh"}
    assert len(ids) == len(set(ids))
    labels = {it["id"]: it["label"] for p in SETS for it in json.loads(p.read_text(encoding="utf-8"))["items"]}
    assert all(labels.get(i) == "harmful" for i in OUT_OF_SCOPE)
