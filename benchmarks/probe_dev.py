"""The probe ablation on dev responses: the output classifier alone, the probe alone and their ensemble.

`ccguard probe` reports the three on the run's synthetic test exchanges. This is the same comparison on
`../shared/data/dev/responses.jsonl` (real model responses, out of domain; evaluation only, never trained on): each
exchange is teacher-forced through the probe's local upstream once, as streaming would read it. The dev set holds
almost no CBRN-weapons content (its 12 harmful `cbrn`-tagged responses are history and policy, see dev_eval.py), so
what this mostly measures is what the probe costs on real traffic: benign and harmful-but-not-CBRN responses it
flags, at each system's own calibrated threshold, and the AUROC over all responses.

Every harmful response and every `cbrn`-tagged one is scored; benign ones are sampled (``--n-benign``, seeded).

Usage: python benchmarks/probe_dev.py --guard runs/cbrn/guard [--dev ../shared/data/dev] [--n-benign 600] [--json OUT]
(after `ccguard probe --guard runs/cbrn/guard`)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guard", type=Path, default=Path("runs/cbrn/guard"))
    ap.add_argument("--dev", type=Path, default=Path("../shared/data/dev"))
    ap.add_argument("--n-benign", type=int, default=600, help="benign responses to sample (the rest are all scored)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    a = ap.parse_args()

    from ccguard import Guard
    from ccguard.evaluate.metrics import auroc, flagged_rate, tpr_at_fpr
    from ccguard.llm.local import LocalBackend
    from ccguard.policy import ensemble
    from ccguard.probes import exchange_features, exchange_score

    guard = Guard.load(a.guard)
    if guard.probe is None or guard.policy.ensemble_threshold is None:
        print(f"{a.guard} has no probe stage: run `ccguard probe --guard {a.guard}` first", file=sys.stderr)
        return 2
    path = a.dev / "responses.jsonl"
    if not path.is_file():
        print(f"{path} not found (the dev set is needed)", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    always = [r for r in rows if r["label"] == "harmful" or r["cbrn"]]
    benign = [r for r in rows if r["label"] != "harmful" and not r["cbrn"]]
    rows = always + random.Random(a.seed).sample(benign, min(a.n_benign, len(benign)))

    spec = guard.probe.spec
    clf = [s.score for s in guard.output_classifier.score([r["prompt"] for r in rows], [r["response"] for r in rows])]
    model, tok = LocalBackend(spec.upstream)._load()
    t0 = time.perf_counter()
    prb: list[float | None] = []
    for r in rows:
        f = exchange_features(model, tok, r["prompt"], r["response"], spec)
        prb.append(exchange_score(guard.probe.logits(f).tolist(), spec.window) if len(f) else None)
    secs = time.perf_counter() - t0
    ens = [ensemble(c, p, spec.weight) for c, p in zip(clf, prb, strict=True)]
    systems = {
        "classifier": (clf, guard.policy.output_threshold),
        "probe": ([0.0 if p is None else p for p in prb], None),
        "ensemble": (ens, guard.policy.ensemble_threshold),
    }
    print(f"guard {a.guard}: probe on {spec.upstream} layers {list(spec.layers)}, weight {spec.weight}, window "
          f"{spec.window}; {len(rows)} dev responses ({len(always)} harmful or cbrn-tagged, {len(rows) - len(always)} "
          f"benign sampled); probe features {secs:.0f} s ({1000 * secs / len(rows):.0f} ms per exchange)")
    groups = {
        "benign (sampled)": lambda r: r["label"] != "harmful" and not r["cbrn"],
        "harmful, not CBRN (should pass)": lambda r: r["label"] == "harmful" and not r["cbrn"],
        "cbrn-tagged harmful": lambda r: r["label"] == "harmful" and r["cbrn"],
        "cbrn-tagged benign": lambda r: r["label"] != "harmful" and r["cbrn"],
    }
    y = [int(r["label"] == "harmful") for r in rows]
    out: dict[str, dict] = {"n": len(rows), "probe_ms_per_exchange": round(1000 * secs / len(rows), 1)}
    print(f"{'system':<11} {'threshold':>9}  {'AUROC':>6}  {'TPR@1%':>6}  {'TPR@0.1%':>8}  flagged per group")
    for name, (sc, thr) in systems.items():
        res = {"threshold": thr, "auroc": auroc(y, sc), "tpr_at_1pct_fpr": tpr_at_fpr(y, sc, 0.01),
               "tpr_at_0.1pct_fpr": tpr_at_fpr(y, sc, 0.001), "flagged": {}}
        cells = []
        for g, keep in groups.items():
            vals = [s for r, s in zip(rows, sc, strict=True) if keep(r)]
            if thr is not None and vals:
                fr = flagged_rate(vals, thr)
                res["flagged"][g] = fr.model_dump()
                cells.append(f"{g} {fr.fmt()}")
        out[name] = res
        t = "n/a" if thr is None else f"{thr:.4f}"
        print(f"{name:<11} {t:>9}  {res['auroc']:.4f}  {res['tpr_at_1pct_fpr']:.3f}  {res['tpr_at_0.1pct_fpr']:>8.3f}  "
              + ("; ".join(cells) or "(no threshold of its own)"))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
