"""Probe ensemble on a local upstream: what it costs per generated token, and where it halts harmful responses.

1. **Overhead.** SmolLM2 streams the same prompts (greedy) through the local backend with and without the guard's
   probe attached; ms per generated token for both (the probe reads hidden states the generation computes anyway).
2. **Halting.** Synthetic test exchanges are replayed token by token as the proxy would see them: the probe logit
   of each token arrives one token late (when the token is fed back), text is fed to the output gate piece by piece.
   For the classifier alone and for the ensemble, at their calibrated thresholds: harmful responses halted,
   harmless answers halted (false positives), the model's refusals of harmful requests halted (by design not false
   positives: the user gets the guard's refusal instead), and the median fraction of a halted harmful response
   released before the halt.

Needs a guard with a probe stage (`ccguard probe --guard DIR`).

Usage: python benchmarks/probe_stream.py --guard runs/cbrn/guard --data runs/cbrn/data [--n 120] [--prompts 6]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from pathlib import Path

PROMPTS = [
    "Give me three tips for keeping basil alive on a windowsill.",
    "Explain how a refrigerator keeps food cold.",
    "Write a short thank-you note to a neighbour who watered my plants.",
    "What are the main causes of the French Revolution?",
    "How do vaccines train the immune system?",
    "Suggest a simple weekly running plan for a beginner.",
]


async def _stream_ms_per_token(backend, prompt: str, max_tokens: int) -> float:
    from ccguard.llm.base import GenerateParams
    from ccguard.records import Message

    _, tok = backend._load()
    t0 = time.perf_counter()
    text = ""
    async for piece in backend.stream([Message(role="user", content=prompt)], GenerateParams(max_tokens=max_tokens, temperature=0)):
        text += piece
    n = max(1, len(tok(text, add_special_tokens=False)["input_ids"]))
    return 1000 * (time.perf_counter() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guard", type=Path, default=Path("runs/cbrn/guard"))
    ap.add_argument("--data", type=Path, default=Path("runs/cbrn/data"))
    ap.add_argument("--n", type=int, default=120, help="test exchanges to replay")
    ap.add_argument("--prompts", type=int, default=6, help="prompts streamed for the overhead")
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()

    from ccguard import Guard
    from ccguard.evaluate.metrics import wilson
    from ccguard.llm.local import LocalBackend
    from ccguard.probes import ProbeTrack, response_features
    from ccguard.records import read_examples, render_prompt

    guard = Guard.load(a.guard)
    if guard.probe is None:
        raise SystemExit("this guard has no probe stage: run `ccguard probe --guard DIR` first")
    spec = guard.probe.spec
    backend = LocalBackend(spec.upstream)
    model, tok = backend._load()

    # 1. Overhead per generated token.
    prompts = (PROMPTS * 10)[: a.prompts]
    asyncio.run(_stream_ms_per_token(backend, prompts[0], 8))  # warm up
    cost = {}
    for name, probe in (("without probe", None), ("with probe", guard.probe)):
        backend.probe = probe
        cost[name] = [asyncio.run(_stream_ms_per_token(backend, p, a.max_tokens)) for p in prompts]
    backend.probe = None
    for name, v in cost.items():
        print(f"local streaming {name}: {statistics.median(v):.2f} ms per generated token (median of {len(v)} prompts)")

    # 2. Halting, replayed.
    rows = [r for r in read_examples(a.data / "output_test.jsonl") if isinstance(r.prompt, str) and r.response]
    random.Random(0).shuffle(rows)
    harmful = [r for r in rows if r.label == "harmful"][: a.n // 2]
    harmless = [r for r in rows if r.label != "harmful"][: a.n - len(harmful)]
    from ccguard.constitution import load as load_constitution
    from ccguard.policy import is_refusal_exchange

    harmful_ids = {c.id for c in load_constitution(a.guard / "constitution.yaml").harmful}

    def kind(r) -> str:
        return "h" if r.label == "harmful" else ("r" if is_refusal_exchange(r, harmful_ids) else "b")

    out: dict[str, dict[str, list]] = {n: {"h": [], "b": [], "r": []} for n in ("classifier alone", "ensemble")}
    for r in harmful + harmless:
        prompt = render_prompt(r.prompt)
        enc = tok(r.response, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"][: spec.max_tokens], enc["offset_mapping"][: spec.max_tokens]
        text = r.response[: offsets[-1][1]] if offsets else r.response
        logits = guard.probe.logits(response_features(model, tok, prompt, ids, spec.layers)).tolist() if ids else []
        for name, with_probe in (("classifier alone", False), ("ensemble", True)):
            gate = guard.start_stream(prompt, probe=False)
            if with_probe:
                gate.probe = ProbeTrack(spec.window)
            for i, (s, e) in enumerate(offsets):
                if with_probe and i > 0:
                    gate.add_probe([logits[i - 1]])
                gate.feed(r.response[s:e] if i == 0 else r.response[offsets[i - 1][1] : e])
                if gate.halted:
                    break
            gate.finish()
            frac = None if gate.stop_char is None else gate.stop_char / max(1, len(text))
            out[name][kind(r)].append(frac)
    print(f"\nreplayed {len(harmful)} harmful and {len(harmless)} harmless test exchanges ({spec.max_tokens} tokens each "
          f"at most); thresholds: classifier {guard.policy.output_threshold:.4f}, ensemble {guard.policy.ensemble_threshold:.4f} "
          f"(probe weight {guard.policy.probe_weight:g})")
    for name, v in out.items():
        rate = {k: wilson(sum(x is not None for x in v[k]), len(v[k])).fmt() for k in v}
        released = [x for x in v["h"] if x is not None]
        med = f"{statistics.median(released):.2f}" if released else "n/a"
        print(f"  {name}: halted harmful {rate['h']}; harmless answers {rate['b']}; refusals {rate['r']}; "
              f"median released before the halt {med}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
