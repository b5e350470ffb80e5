"""Edgy but harmless questions, and harmful ones in the same shapes: does the input guard read intent or alarm words?

Data: three sets of conversations of 1-3 user turns, hand-written for this check (never trained on) by three helper
sessions that saw neither the seed bank, the code, the other benchmarks nor each other's sets:
- `benchmarks/data/edgy_questions.json` (set 1, 136 items) was written while design/033's first seeds in these
  shapes were, and its misses were seen before its intent pairs were written;
- `edgy_questions_2.json` (set 2, 136 items) was written after the first of those seeds and scored before the
  second; its misses led to the `personal` seeds (one person or household harmed covertly);
- `edgy_questions_3.json` (set 3, 170 items, with a fifth shape, `personal`) was written after all of them and is the
  independent check.

Shapes that a filter keyed on alarming words, or on production verbs, gets wrong:
- **danger**: risk perception from the public's side (how dangerous is X really, what should people do if X);
- **superlative**: record and comparison questions (deadliest, most toxic, largest, which is worse);
- **animal_plant**: livestock, wildlife and crop diseases, zoonoses, border rules for food, farm biosecurity;
- **teaching**: a mechanism explained at a level, by a teacher, parent, nurse or student;
- **personal** (set 3): worries about one person's exposure, against harming one person or household with an agent.

Each shape has 24 harmless items (12 English, 3 each in Spanish, French, German and Chinese) and 10 harmful ones in the
same shape and register (6 English, 1 in each other language) whose intent is plainly to harm people or gain a weapon.
Items whose target the constitution does not cover (`OUT_OF_SCOPE`) get their own row and stay out of the totals.

Every conversation is screened the way `Guard.check_input` screens it (the newest turn with the turns before it, the
whole conversation, each turn alone; earlier turns judged `history_margin` logits more strictly) at the guard's
calibrated threshold. Prints, per shape, harmless passed and harmful blocked with 95% Wilson intervals, harmless passed
per language, the AUROC of harmful against harmless, and with `--failures` each miss with its score in logits above or
below the threshold.

Usage: python benchmarks/edgy_questions.py --guard runs/cbrn/guard [--failures] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETS = tuple(HERE / "data" / f for f in ("edgy_questions.json", "edgy_questions_2.json", "edgy_questions_3.json"))
# Harmful items whose target the bundled constitution does not cover (its harmful categories are about CBRN harm to
# people): attacks on livestock or crops (set 1, and one in set 3), and, in set 2, one person poisoned with a common
# poison (a plant, mushrooms, an undetectable poison, trichinosis), which `other_harms_out_of_scope` leaves to the
# model. Reported on their own row, not in the totals.
OUT_OF_SCOPE = {"eq093", "eq094", "eq095", "eq096", "eq097", "eq099", "eq100", "eq101", "eq102",
                "eb035", "eb038", "eb072", "eb081", "ec097"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guard", type=Path, default=Path("runs/cbrn/guard"))
    ap.add_argument("--failures", action="store_true", help="list each item the guard gets wrong, with its score")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--data", type=Path, nargs="+", default=[p for p in SETS if p.exists()], help="the sets to score")
    a = ap.parse_args()

    from sklearn.metrics import roc_auc_score

    from ccguard import Guard
    from ccguard.evaluate.metrics import wilson
    from ccguard.policy import logit

    guard = Guard.load(a.guard)
    thr = guard.policy.input_threshold
    print(f"guard {a.guard}  input threshold {thr:.4f}  history_margin {guard.policy.history_margin:g}")
    results: dict[str, dict[str, object]] = {}
    for path in a.data:
        items = json.loads(path.read_text(encoding="utf-8"))["items"]
        convs = [[{"role": "user", "content": t} for t in it["turns"]] for it in items]
        rows = list(zip(items, guard.check_inputs(convs), strict=True))
        res: dict[str, object] = {}
        results[path.name] = res

        def row(name: str, sel: list, harmful: bool, res: dict[str, object] = res) -> None:
            ok = sum((not v.allowed) == harmful for _, v in sel)
            r = wilson(ok, len(sel))
            res[name] = {"rate": r.rate, "lo": r.lo, "hi": r.hi, "n": len(sel)}
            print(f"  {name:<52} {r.fmt()}")

        print(f"\n{path.name} ({len(items)} items): harmless passed, harmful blocked")
        shapes = sorted({it["shape"] for it in items}, key=[it["shape"] for it in items].index)
        for shape in shapes:
            mine = [(it, v) for it, v in rows if it["shape"] == shape]
            row(f"{shape}: harmless passed", [x for x in mine if x[0]["label"] == "benign"], False)
            harm = [x for x in mine if x[0]["label"] == "harmful"]
            row(f"{shape}: harmful blocked", [x for x in harm if x[0]["id"] not in OUT_OF_SCOPE], True)
            if any(it["id"] in OUT_OF_SCOPE for it, _ in harm):
                row(f"{shape}: harmful outside the constitution, blocked", [x for x in harm if x[0]["id"] in OUT_OF_SCOPE], True)
        scope = [(it, v) for it, v in rows if it["id"] not in OUT_OF_SCOPE]
        row("all shapes: harmless passed", [x for x in scope if x[0]["label"] == "benign"], False)
        row("all shapes: harmful blocked", [x for x in scope if x[0]["label"] == "harmful"], True)
        print("  harmless passed, by language:")
        for lang in ("en", "es", "fr", "de", "zh"):
            row(f"  {lang}", [(it, v) for it, v in rows if it["label"] == "benign" and it["lang"] == lang], False)
        auroc = float(roc_auc_score([int(it["label"] == "harmful") for it, _ in scope], [v.score for _, v in scope]))
        res["auroc"] = auroc
        print(f"  AUROC, harmful against harmless (n={len(scope)}): {auroc:.3f}")
        if a.failures:
            print("  misses (score in logits relative to the threshold):")
            for it, v in rows:
                if (not v.allowed) != (it["label"] == "harmful"):
                    print(f"    {it['id']} {it['shape']:<12} {it['lang']} {it['label']:<7} "
                          f"{logit(v.score) - logit(thr):+.2f}  {' | '.join(it['turns'])[:130]!r}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
