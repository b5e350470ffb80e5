"""Input-check latency: p50 and p95 of `Guard.check_input` on a 200-token prompt, one request at a time,
plus batched throughput on distinct prompts. Run on the machine you deploy on (the README's numbers are from 2 CPU
cores).

Usage: python benchmarks/input_latency.py --guard runs/cbrn/guard [--n 100] [--tokens 200] [--runtime fast]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from ccguard.evaluate.runner import EVERYDAY_TEXT as TEXT


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guard", type=Path, default=Path("runs/cbrn/guard"))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=200, help="prompt length in tokens (cut from a fixed text)")
    ap.add_argument("--runtime", default="torch", help="torch, or fast (int8; see benchmarks/fast_path.py)")
    a = ap.parse_args()

    import torch

    from ccguard import Guard

    guard = Guard.load(a.guard, runtime=a.runtime)
    clf = guard.input_classifier
    text = clf.tokenizer.decode(clf.token_ids(TEXT)[: a.tokens])
    n_tok = len(clf.token_ids(text))
    for _ in range(5):
        guard.check_input(text)
    lat = []
    for _ in range(a.n):
        t0 = time.perf_counter()
        guard.check_input(text)
        lat.append(1000 * (time.perf_counter() - t0))
    lat.sort()
    p50 = statistics.median(lat)
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    # Distinct prompts: identical windows within one call are scored once, so a batch of copies would flatter.
    batch = [f"Request {i}: {text}" for i in range(64)]
    t0 = time.perf_counter()
    guard.check_inputs(batch)
    thr = len(batch) / (time.perf_counter() - t0)
    print(f"prompt: {n_tok} tokens, {len(clf.windows(text))} window(s) of {clf.spec.max_len}; torch threads {torch.get_num_threads()}")
    print(f"check_input latency: p50 {p50:.1f} ms  p95 {p95:.1f} ms  (n={a.n}, one request at a time)")
    print(f"batched throughput: {thr:.1f} prompts/s (batch of {len(batch)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
