"""The fast CPU runtime against full precision: decision agreement, AUROC and speed, for both classifiers.

* Input classifier: every prompt of the synthetic test split, scored in fp32 (torch), in the guard's default
  precision (bf16 autocast where the CPU has it), with int8 alone (ONNX Runtime) and with the fast runtime (int8,
  re-scored in full precision near the threshold). Agreement is the share of prompts whose decision at the guard's
  threshold matches fp32; "scored twice" is the share the fast runtime re-scored. Latency: `Guard.check_input` on a
  200-token everyday prompt, one request at a time.
* Output classifier: a sample of the output test split (the report's sample size), whole-response scores, and
  streaming cost in ms per token at three response lengths (it should stay flat with the fast runtime too).

Usage: python benchmarks/fast_path.py --guard runs/cbrn/guard --data runs/cbrn/data [--output-n 1000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guard", type=Path, default=Path("runs/cbrn/guard"))
    ap.add_argument("--data", type=Path, default=Path("runs/cbrn/data"))
    ap.add_argument("--output-n", type=int, default=1000, help="output test exchanges sampled (0: all)")
    ap.add_argument("--n", type=int, default=200, help="latency repetitions")
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024])
    a = ap.parse_args()

    from input_latency import TEXT
    from sklearn.metrics import roc_auc_score
    from stream_cost import cached, response_of

    from ccguard import Guard
    from ccguard.evaluate.runner import latency_ms
    from ccguard.policy import is_everyday
    from ccguard.records import read_examples, render_prompt

    t0 = time.perf_counter()
    fast = Guard.load(a.guard, runtime="fast")
    build_s = time.perf_counter() - t0
    ref = Guard.load(a.guard)
    default_precision = ref.input_classifier.precision
    thr_in, thr_out = ref.policy.input_threshold, ref.policy.output_threshold

    test = read_examples(a.data / "test.jsonl")
    prompts = [render_prompt(e.prompt) for e in test]
    y = np.array([e.label == "harmful" for e in test])
    everyday = np.array([is_everyday(e) for e in test])
    rows = []
    scores = {}
    exact_from = fast.input_classifier.exact_from
    runs = [("fp32", ref, "no")] + ([("bf16", ref, "bf16")] if default_precision == "bf16" else [])
    runs += [("int8 only", fast, None), ("fast (int8 + exact near threshold)", fast, None)]
    for name, guard, precision in runs:
        clf = guard.input_classifier
        if precision is not None:
            clf.precision = precision
        clf.exact_from = None if name == "int8 only" else exact_from
        scores[name] = np.array([s.score for s in clf.score(prompts)])
        text = clf.tokenizer.decode(clf.token_ids(TEXT)[:200])
        p50, p95 = latency_ms(lambda g=guard, t=text: g.check_input(t), a.n, warmup=5)
        rows.append((name, p50, p95))
    twice = scores["int8 only"] >= exact_from
    print(f"input classifier: {len(test)} test prompts ({int(y.sum())} harmful), threshold {thr_in:.4f}, re-scored "
          f"from {exact_from:.4f}; fast runtime built in {build_s:.1f}s; torch threads {torch.get_num_threads()}")
    print(f"scored twice by the fast runtime: {twice.mean():.1%} of all test prompts, {twice[~y].mean():.1%} of "
          f"harmless ones, {twice[everyday].mean():.1%} of everyday ones ({int(everyday.sum())})")
    print("| runtime | AUROC | decisions agreeing with fp32 | flagged | p50 ms (200 tokens) | p95 ms |")
    print("|---|---|---|---|---|---|")
    base = scores["fp32"] > thr_in
    for name, p50, p95 in rows:
        s = scores[name]
        agree = float(((s > thr_in) == base).mean())
        print(f"| {name} | {roc_auc_score(y, s):.4f} | {agree:.2%} ({int(((s > thr_in) != base).sum())} differ) | "
              f"{int((s > thr_in).sum())} | {p50:.1f} | {p95:.1f} |")

    if ref.output_classifier is None:
        return 0
    otest = read_examples(a.data / "output_test.jsonl")
    if a.output_n and len(otest) > a.output_n:
        otest = random.Random(0).sample(otest, a.output_n)
    oy = np.array([e.label == "harmful" for e in otest])
    op = [render_prompt(e.prompt) for e in otest]
    orsp = [e.response or "" for e in otest]
    prompt = "Can you explain how this process works, step by step, in detail?"
    oscores, costs = {}, {}
    oexact = fast.output_classifier.exact_from
    for name, guard in (("fp32", ref), ("int8 only", fast), ("fast (int8 + exact near threshold)", fast)):
        clf = guard.output_classifier
        clf.exact_from = None if name == "int8 only" else oexact
        t0 = time.perf_counter()
        oscores[name] = np.array([s.score for s in clf.score(op, orsp)])
        score_s = time.perf_counter() - t0
        cached(clf, prompt, response_of(clf, 32))
        costs[name] = ([statistics.median(cached(clf, prompt, response_of(clf, n)) for _ in range(3)) for n in a.lengths],
                       score_s)
    otwice = oscores["int8 only"] >= oexact
    print(f"\noutput classifier: {len(otest)} test exchanges ({int(oy.sum())} harmful), threshold {thr_out:.4f}, "
          f"re-scored from {oexact:.4f}: {otwice.mean():.1%} of exchanges scored twice, {otwice[~oy].mean():.1%} of "
          f"harmless ones")
    print("| runtime | AUROC | decisions agreeing with fp32 | batch scoring s | "
          + " | ".join(f"stream ms/token at {n}" for n in a.lengths) + " |")
    print("|---|---|---|---|" + "---|" * len(a.lengths))
    obase = oscores["fp32"] > thr_out
    for name in oscores:
        s = oscores[name]
        agree = float(((s > thr_out) == obase).mean())
        per_tok, score_s = costs[name]
        print(f"| {name} | {roc_auc_score(oy, s):.4f} | {agree:.2%} ({int(((s > thr_out) != obase).sum())} differ) | "
              f"{score_s:.1f} | " + " | ".join(f"{c:.2f}" for c in per_tok) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
