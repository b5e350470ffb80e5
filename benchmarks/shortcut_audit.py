"""Shortcut audit of an existing data directory: mask the constitution's topic words, fit a bag-of-words model on the
masked training text and print its AUROC on val+test, with the n-grams that most predict each label. A masked AUROC
well above 0.5 means the data's style, not its CBRN content, gives the label away (target: at most 0.65).

Usage: python benchmarks/shortcut_audit.py --data runs/cbrn/data [--constitution cbrn] [--json audit.json]
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
    a = ap.parse_args()

    from ccguard import constitution
    from ccguard.evaluate.shortcut import audit_data_dir

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


if __name__ == "__main__":
    raise SystemExit(main())
