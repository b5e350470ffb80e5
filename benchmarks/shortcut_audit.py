"""Shortcut audit of an existing data directory: mask the constitution's topic words, fit a bag-of-words model on the
masked training text and print its AUROC on val+test, with the n-grams that most predict each label. A masked AUROC
well above 0.5 means the data's style, not its CBRN content, gives the label away (target: at most 0.65).

Usage: python benchmarks/shortcut_audit.py --data runs/cbrn/data [--constitution cbrn] [--json audit.json]
       python benchmarks/shortcut_audit.py --data runs/cbrn/data --filter-check [--side input|output]
       python benchmarks/shortcut_audit.py --data runs/cbrn/data --dev ../shared/data/dev
       python benchmarks/shortcut_audit.py --data runs/cbrn/data --twin-bound

--dev asks whether the prompt-side style the audit finds is a synthetic artefact or also holds in real requests. The
audit's models (topic mask, and function words only) are fitted on the training prompts as the audit fits them, then
score the dev prompts: the CBRN-weapons requests (`dev_eval.NOT_CBRN` left out) against benign requests, against
non-CBRN harmful requests, and against every benign row (moderation web text included, which any model that knows what
a request looks like tells apart), with percentile-bootstrap CIs. Evaluation only: nothing is fitted on dev data.
Above 0.5, the style our data teaches points the right way on real text; at 0.5 it says nothing; below, it misleads.
The dev responses hold no CBRN-weapons answers (their 12 `cbrn`-tagged harmful rows are war crimes, politics and
health misinformation), so the response side cannot be checked this way.

--filter-check asks whether dropping the style-predictable rows (AFLite: Le Bras et al., 2020, "Adversarial Filters
of Dataset Biases", ICML) would be an honest fix. Each round fits the audit's masked-text model out of fold on every
row of every split (4 folds grouped by base query) and drops the 5% of each label whose own label it predicts most
surely (only rows above 0.6). It prints the audit on the kept rows, and the same kept training rows scored on the
unfiltered evaluation rows: if the second stays high, the kept training data still teaches the style and the filter
only hid it from the evaluation split (design/035). Minutes per side.

--twin-bound asks how far harmless data can take the audit. The only lever that has moved the response side without
costing the guard is a harmless twin of each harmful answer, in its words with a harmless topic (design/008, 017).
This adds the perfect twin to every split: a harmless copy of every harmful row, identical once the topic words are
masked. The model cannot tell a twin from its original, so they tie; the audit that is left comes from the harmless
rows that no harmful row resembles (the everyday pool, refusals, homonyms). If it stays above the target, no amount of
twins passes the audit, and only harmful data in the styles of those rows could (design/039).
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
    ap.add_argument("--dev", type=Path, default=None, help="score the audit's prompt models on these dev prompts")
    ap.add_argument("--twin-bound", action="store_true", help="the audit with a perfect harmless twin of every harmful row")
    a = ap.parse_args()

    from ccguard import constitution
    from ccguard.evaluate.shortcut import audit_data_dir

    if a.dev is not None:
        dev_check(a.data, constitution.load(a.constitution), a.dev, seed=a.seed)
        return 0
    if a.twin_bound:
        twin_bound(a.data, constitution.load(a.constitution), seed=a.seed)
        return 0
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


def twin_bound(data_dir: Path, const, *, seed: int = 0) -> dict[str, tuple]:
    """The audit as it is, and with a harmless copy of every harmful row in every split (see --twin-bound above);
    returns {side: (before, after)}."""
    from ccguard.evaluate.shortcut import audit, topic_vocabulary
    from ccguard.records import Example, read_examples

    def twinned(rows: list[Example]) -> list[Example]:
        return rows + [e.model_copy(update={"id": f"{e.id}:twin", "label": "harmless"}) for e in rows if e.label == "harmful"]

    missing = [f for f in ("train", "val", "test", "output_train", "output_val", "output_test")
               if not (data_dir / f"{f}.jsonl").is_file()]
    if missing:
        raise SystemExit(f"{data_dir}: no {', '.join(f + '.jsonl' for f in missing)} (--data takes a run's data folder)")
    vocab = topic_vocabulary(const)
    out = {}
    for prefix, side in (("", "input"), ("output_", "output")):
        train = read_examples(data_dir / f"{prefix}train.jsonl")
        evals = read_examples(data_dir / f"{prefix}val.jsonl") + read_examples(data_dir / f"{prefix}test.jsonl")
        before, after = audit(train, evals, vocab, side, seed=seed), audit(twinned(train), twinned(evals), vocab, side, seed=seed)
        n = sum(e.label == "harmful" for e in train + evals)
        for name, r in (("as built", before), (f"+ {n} perfect twins", after)):
            print(f"{side:6s} {name:24s} topic mask {r.auroc_masked:.3f}  base rows {r.auroc_masked_base or 0:.3f}  "
                  f"function words only {r.auroc_function_words or 0:.3f}  (target <= {r.target})")
        out[side] = (before, after)
    return out


# Sources in the dev prompts whose rows are web and chat text, not requests to an assistant: against them, any model
# that has learned what a request looks like scores well, so they are reported apart.
NOT_REQUESTS = {"openai-moderation"}


def dev_check(data_dir: Path, const, dev: Path, *, seed: int = 0, resamples: int = 1000) -> None:
    """The audit's prompt models, fitted on our training prompts, scored on real dev prompts (see --dev above)."""
    import random
    import sys

    import numpy as np

    from ccguard.evaluate.metrics import auroc
    from ccguard.evaluate.shortcut import _fit, _text, mask_content, mask_topic, topic_vocabulary
    from ccguard.records import read_examples

    path = dev / "prompts.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (--dev takes the folder that holds prompts.jsonl)")
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from dev_eval import NOT_CBRN, load_jsonl

    rows = load_jsonl(path)
    vocab = topic_vocabulary(const)
    train = read_examples(data_dir / "train.jsonl")
    y = [int(e.label == "harmful") for e in train]
    cbrn = [r for r in rows if r["label"] == "harmful" and r.get("cbrn") and r["id"] not in NOT_CBRN]
    request = [r for r in rows if r.get("source", "").split("/")[0] not in NOT_REQUESTS]
    against = {
        "benign requests": [r for r in request if r["label"] == "benign"],
        "non-CBRN harmful requests": [r for r in request if r["label"] == "harmful" and not r.get("cbrn")],
        "benign, all sources": [r for r in rows if r["label"] == "benign"],
    }
    if not cbrn or not all(against.values()) or len(set(y)) < 2:
        raise SystemExit(f"{path}: need CBRN-weapons requests, benign requests and non-CBRN harmful requests, and "
                         f"{data_dir / 'train.jsonl'} needs both labels")
    sources = sorted({r.get("source", "") for r in cbrn})
    print(f"dev prompts: {len(cbrn)} CBRN-weapons requests (from {', '.join(sources)}); "
          + ", ".join(f"{len(v)} {k}" for k, v in against.items())
          + f"; models fitted on {len(train)} training prompts")
    for name, mask in (("topic mask", lambda t: mask_topic(t, vocab)), ("function words only", mask_content)):
        model = _fit([mask(_text(e, "input")) for e in train], y)
        score = dict(zip([r["id"] for r in rows], model.predict_proba([mask(r["prompt"]) for r in rows])[:, 1],
                         strict=True))
        for label, neg in against.items():
            pos_s, neg_s = [score[r["id"]] for r in cbrn], [score[r["id"]] for r in neg]
            rng = random.Random(seed)
            boot = [auroc([1] * len(pos_s) + [0] * len(neg_s), p + n)
                    for p, n in (([rng.choice(pos_s) for _ in pos_s], [rng.choice(neg_s) for _ in neg_s])
                                 for _ in range(max(1, resamples)))]
            lo, hi = np.percentile(boot, [2.5, 97.5])
            a = auroc([1] * len(pos_s) + [0] * len(neg_s), pos_s + neg_s)
            print(f"  {name:20s} CBRN requests vs {label:26s} AUROC {a:.3f} [{lo:.3f}, {hi:.3f}]")


if __name__ == "__main__":
    raise SystemExit(main())
