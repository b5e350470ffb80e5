"""Shortcut audit of an existing data directory: mask the constitution's topic words, fit a bag-of-words model on the
masked training text and print its AUROC on val+test, with the n-grams that most predict each label. A masked AUROC
well above 0.5 means the data's style, not its CBRN content, gives the label away (target: at most 0.65).

Usage: python benchmarks/shortcut_audit.py --data runs/cbrn/data [--constitution cbrn] [--json audit.json]
       python benchmarks/shortcut_audit.py --data runs/cbrn/data --filter-check [--side input|output]

--filter-check asks whether dropping the style-predictable rows (AFLite: Le Bras et al., 2020, "Adversarial Filters
of Dataset Biases", ICML) would be an honest fix. Each round fits the audit's masked-text model out of fold on every
row of every split (4 folds grouped by base query) and drops the 5% of each label whose own label it predicts most
surely (only rows above 0.6). It prints the audit on the kept rows, and the same kept training rows scored on the
unfiltered evaluation rows: if the second stays high, the kept training data still teaches the style and the filter
only hid it from the evaluation split (design/035). Minutes per side.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("runs/cbrn/data"))
    ap.add_argument("--constitution", default="cbrn", help="bundled name or path to a YAML file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=25, help="n-grams to print per label")
    ap.add_argument("--json", type=Path, default=None, help="also write the audit here")
    ap.add_argument("--filter-check", action="store_true", help="the AFLite check above instead of the audit")
    ap.add_argument("--side", choices=("input", "output"), default=None, help="--filter-check: one side (both if unset)")
    ap.add_argument("--rounds", type=int, default=10, help="--filter-check: filtering rounds")
    a = ap.parse_args()

    from ccguard import constitution
    from ccguard.evaluate.shortcut import audit_data_dir

    if a.filter_check:
        const = constitution.load(a.constitution)
        for side in (a.side,) if a.side else ("input", "output"):
            filter_check(a.data, const, side, rounds=a.rounds)
        return 0

    report = audit_data_dir(a.data, constitution.load(a.constitution), seed=a.seed)
    for r in (report.input, report.output):
        print(r.summary())
        print(f"  rows: train {r.n_train} (base {r.n_train_base}), eval {r.n_eval} (base {r.n_eval_base}); {r.seconds}s")
        for label, feats in (("harmful", r.top_features.harmful), ("harmless", r.top_features.harmless)):
            print(f"  most {label}-predictive: " + ", ".join(f"{f.ngram!r} {f.weight:+.2f}" for f in feats[: a.top]))
        print("  groups, most separable first (each against every eval row of the other label): "
              + ", ".join(f"{g.group} ({g.label}, n={g.n}) {g.auroc:.3f}" for g in r.by_group))
    if a.json:
        a.json.write_text(report.model_dump_json(indent=2))
    return 0 if report.input.passed and report.output.passed else 1


def filter_check(data_dir: Path, const, side: str, *, rounds: int = 10, step: float = 0.05) -> None:
    """AFLite over all splits, one round per line: the audit on the kept rows, and on the unfiltered eval rows."""
    from collections import Counter

    import numpy as np
    from sklearn.model_selection import GroupKFold

    from ccguard.evaluate.shortcut import _fit, _text, audit, mask_topic, topic_vocabulary
    from ccguard.records import read_examples

    pre = "" if side == "input" else "output_"
    vocab = topic_vocabulary(const)
    train = read_examples(data_dir / f"{pre}train.jsonl")
    evals = read_examples(data_dir / f"{pre}val.jsonl") + read_examples(data_dir / f"{pre}test.jsonl")
    rows = train + evals
    memo: dict[str, bool] = {}
    texts = [mask_topic(_text(e, side), vocab, memo) for e in rows]
    y = np.array([int(e.label == "harmful") for e in rows])
    groups = [e.group or e.id for e in rows]
    totals = Counter(e.source for e in rows)
    keep = np.ones(len(rows), bool)
    print(f"{side}: {len(train)} train + {len(evals)} eval rows. Columns: round, kept, dropped, audit on kept rows "
          "(all / base), kept training rows on unfiltered eval rows (all / base), dropped share per source")
    for r in range(rounds + 1):
        idx = np.where(keep)[0]
        kept_train = [rows[i] for i in idx if i < len(train)]
        kept = audit(kept_train, [rows[i] for i in idx if i >= len(train)], vocab, side)
        unfiltered = audit(kept_train, evals, vocab, side)
        gone = Counter(rows[i].source for i in np.where(~keep)[0])
        print(f"  {r:2d} {len(idx):6d} {1 - len(idx) / len(rows):5.1%}  {kept.auroc_masked:.3f} / "
              f"{kept.auroc_masked_base or 0:.3f}  {unfiltered.auroc_masked:.3f} / {unfiltered.auroc_masked_base or 0:.3f}  "
              + " ".join(f"{k} {gone[k] / n:.0%}" for k, n in totals.items()), flush=True)
        if r == rounds:
            break
        p = np.zeros(len(rows))
        folds = GroupKFold(4, shuffle=True, random_state=r).split(idx, y[idx], [groups[i] for i in idx])
        for fit_rows, score_rows in folds:
            m = _fit([texts[idx[i]] for i in fit_rows], y[idx[fit_rows]].tolist())
            p[idx[score_rows]] = m.predict_proba([texts[idx[i]] for i in score_rows])[:, 1]
        sure = np.where(y == 1, p, 1 - p)
        for label in (0, 1):
            mine = idx[y[idx] == label]
            surest = mine[np.argsort(-sure[mine])][: int(step * len(mine))]
            keep[[i for i in surest if sure[i] > 0.6]] = False


if __name__ == "__main__":
    raise SystemExit(main())
