"""Arena load test, loopback only: P participants at once, each submitting K attempts in turn and following each
one's event stream to the end, through the arena, the guarded proxy (the real guard) and a loopback upstream that
streams a fixed benign text at a model-like rate.

Prints, per participant count, attempts per second and the p50/p95 time from submit to the end of an attempt; then
checks the database: every attempt stored once, ended `done`, with exactly the upstream's text.

Usage: python benchmarks/arena_load.py --guard runs/cbrn/guard [--participants 1 4 8] [--attempts 3]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

TEXT = ("To bake crusty bread, use a hot oven, add steam for the first minutes, and let the dough proof slowly "
        "overnight in the fridge. Score the top before baking and cool it on a rack so the crust stays crisp.")


def attempt(url: str, token: str, k: int) -> float:
    h = {"Authorization": f"Bearer {token}"}
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/api/attempts", json={"kind": "single", "prompt": f"How do I bake crusty bread? ({k})",
                                               "target": k % 5, "nonce": uuid.uuid4().hex}, headers=h, timeout=60)
    r.raise_for_status()
    aid = r.json()["id"]
    with httpx.stream("GET", f"{url}/api/attempts/{aid}/events", headers=h, timeout=300) as s:
        for line in s.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["type"] == "done":
                break
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guard", type=Path, required=True)
    ap.add_argument("--participants", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--attempts", type=int, default=3, help="Attempts per participant.")
    ap.add_argument("--tokens-per-second", type=float, default=50.0, help="Upstream speed (about 4 characters a token).")
    args = ap.parse_args()

    from ccguard import constitution as C
    from ccguard.arena.app import ArenaSettings, create_arena_app
    from ccguard.arena.campaign import from_constitution
    from ccguard.arena.grading import HeuristicGrader
    from ccguard.arena.runner import ProxyTarget
    from ccguard.arena.store import Store
    from ccguard.guard import Guard
    from ccguard.llm.base import create_backend
    from ccguard.server import ServerSettings, create_app
    from ccguard.server.loopback import FakeUpstream, serving

    guard = Guard.load(args.guard)
    up = FakeUpstream(TEXT, piece=8, delay=2 / args.tokens_per_second)  # 8 characters ~ 2 tokens a piece
    print("| participants | attempts | attempts/s | p50 s | p95 s | stored once and done | text intact |")
    print("|---|---|---|---|---|---|---|")
    with serving(up.app) as up_url, tempfile.TemporaryDirectory() as tmp:
        for n in args.participants:
            store = Store(Path(tmp) / f"arena-{n}.sqlite")
            cid = store.ensure_campaign(from_constitution(C.load(args.guard / "constitution.yaml")))
            tokens = [store.invite(f"p{i}").token for i in range(n)]
            key = secrets.token_urlsafe(16)
            proxy = create_app(guard, create_backend("openai", model="fake", base_url=f"{up_url}/v1"),
                               ServerSettings(api_keys=frozenset({key}), report_verdicts=True, slots=8, max_waiting=64,
                                              slot_timeout=60))
            with serving(proxy) as proxy_url:
                app = create_arena_app(store, cid, ProxyTarget(f"{proxy_url}/v1", key), HeuristicGrader(),
                                       ArenaSettings(attempts_per_minute=1000))
                with serving(app) as url:
                    t0 = time.perf_counter()
                    with ThreadPoolExecutor(n) as pool:
                        times = [t for ts in pool.map(lambda tok: [attempt(url, tok, k) for k in range(args.attempts)],
                                                      tokens) for t in ts]
                    wall = time.perf_counter() - t0
            rows = store.attempts(None, limit=100_000)
            once = len(rows) == n * args.attempts and all(a.status == "done" for a in rows)
            intact = all(len(a.runs) == 1 and a.runs[0].response == TEXT for a in rows)
            q = statistics.quantiles(times, n=20) if len(times) > 1 else times * 19
            print(f"| {n} | {len(times)} | {len(times) / wall:.2f} | {statistics.median(times):.2f} | {q[18]:.2f} | "
                  f"{'yes' if once else 'NO'} | {'yes' if intact else 'NO'} |")
            store.close()


if __name__ == "__main__":
    main()
