"""Streaming cost of the output classifier, in ms per response token, at response lengths 128, 512 and 1,024:

* cached: a StreamSession scoring 16-token chunks on a KV cache (what `Guard.screen_stream` does);
* naive: re-scoring the whole prompt + response prefix from scratch after every chunk;
* paragraphs: the cached path on the same words with a blank line every ``--paragraph-words`` words, so that each
  paragraph after the first is also scored in its own window (``OutputSpec.paragraph_windows``; the same as cached
  when the guard has them off).

The cached path's cost per token should stay flat as the response grows; the naive path's grows with length.

Then the proxy's cross-stream batching: B streams (each 100-300 tokens in) score their next chunk one by one, or
together in one batched call (`classifiers.output.score_chunks`), in ms per chunk.

Usage: python benchmarks/stream_cost.py --guard runs/cbrn/guard [--lengths 128 512 1024] [--repeats 3] [--batch 1 4 8 16 32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

WORDS = ["the", "process", "then", "continues", "with", "careful", "steps", "and", "checks", "while", "the", "team", "records", "each", "result", "in", "the", "notebook", "before", "moving", "on", "to", "the", "next", "stage", "of", "the", "work"]


def response_of(clf, n_tokens: int, paragraph_words: int = 0) -> str:
    text, i = [], 0
    while len(clf.response_tokens(" ".join(text)).ids) < n_tokens:
        text.append(WORDS[i % len(WORDS)] + ("\n\n" if paragraph_words and (i + 1) % paragraph_words == 0 else ""))
        i += 1
    return " ".join(text)


def cached(clf, prompt: str, text: str) -> float:
    s = clf.session(prompt)
    t0 = time.perf_counter()
    s.feed(text)
    s.finish()
    return 1000 * (time.perf_counter() - t0) / len(s.token_ids)


@torch.inference_mode()
def naive(clf, prompt: str, text: str) -> float:
    ctx = clf.context_ids(prompt)
    ids = clf.response_tokens(text).ids
    k = clf.spec.chunk_tokens
    cap = clf.spec.max_positions - len(ctx)
    t0 = time.perf_counter()
    for end in range(k, len(ids) + k, k):
        window = ids[:end][-cap:]  # beyond the position budget, re-score the most recent tokens that fit
        clf.model(torch.tensor([ctx + window]))
    return 1000 * (time.perf_counter() - t0) / len(ids)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guard", type=Path, default=Path("runs/cbrn/guard"))
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runtime", default="torch", help="torch, or fast (int8; see benchmarks/fast_path.py)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8, 16, 32], help="streams scored together")
    ap.add_argument("--paragraph-words", type=int, default=60, help="words per paragraph in the paragraphs column")
    a = ap.parse_args()
    from ccguard import Guard

    clf = Guard.load(a.guard, runtime=a.runtime).output_classifier
    prompt = "Can you explain how this process works, step by step, in detail?"
    cached(clf, prompt, response_of(clf, 32))  # warm up
    print(f"chunk {clf.spec.chunk_tokens} tokens, position budget {clf.spec.max_positions}, torch threads {torch.get_num_threads()}, "
          f"paragraph windows {'on' if clf.spec.paragraph_windows else 'off'}")
    print(f"{'tokens':>7s} {'cached ms/token':>16s} {'naive ms/token':>15s} {'paragraphs ms/token':>20s}")
    for n in a.lengths:
        text = response_of(clf, n)
        c = statistics.median(cached(clf, prompt, text) for _ in range(a.repeats))
        nv = statistics.median(naive(clf, prompt, text) for _ in range(a.repeats))
        paras = response_of(clf, n, a.paragraph_words)
        pc = statistics.median(cached(clf, prompt, paras) for _ in range(a.repeats))
        print(f"{n:7d} {c:16.2f} {nv:15.2f} {pc:20.2f}")
    print(f"\n{'streams':>7s} {'one by one ms/chunk':>20s} {'batched ms/chunk':>17s}")
    for b in a.batch:
        one, together = batch_cost(clf, prompt, b, a.repeats)
        print(f"{b:7d} {one:20.2f} {together:17.2f}")
    return 0


def batch_cost(clf, prompt: str, streams: int, repeats: int) -> tuple[float, float]:
    """ms per chunk for ``streams`` sessions' next chunks, scored one by one and batched (each from the same state)."""
    from ccguard.classifiers.output import score_chunks

    def sessions() -> list:
        out = []
        for i in range(streams):
            s = clf.session(prompt)
            s.feed(response_of(clf, 100 + (37 * i) % 200))
            out.append(s)
        return out

    chunk = clf.response_tokens(" " + " ".join(WORDS)).ids[: clf.spec.chunk_tokens]
    one, together = [], []
    for _ in range(repeats):
        ss = sessions()
        t = time.perf_counter()
        for s in ss:
            s._score_chunk(chunk)
        one.append(1000 * (time.perf_counter() - t) / streams)
        ss = sessions()
        t = time.perf_counter()
        score_chunks([(s, chunk) for s in ss])
        together.append(1000 * (time.perf_counter() - t) / streams)
    return statistics.median(one), statistics.median(together)


if __name__ == "__main__":
    raise SystemExit(main())
