"""Hostile input: shows that prompt decoding is linear-time and that one hostile request does not stall the proxy.

Part A times every registered view decoder, and the whole `decoded_views`, on adversarial inputs at several sizes
(no-whitespace runs, the old email-regex killer "a@b." repeated, hex, leetspeak, spaced letters, Morse, binary,
base64-alphabet runs, random short words for the cipher-span finder, a long ROT13 paragraph). For each case it prints
seconds per size and the ratios between consecutive sizes: about 10 for sizes 10x apart means linear time. A cell
over --cell-limit seconds is printed and the larger sizes of that row are skipped.

Part B starts the proxy in-process on loopback (a fake upstream that returns a fixed benign text) and, while one
hostile 199,000-character request is being screened, measures from other threads the /healthz latency and the
latency of a benign chat request, plus the hostile request's own time and status; then the same with nothing
hostile running, for comparison.

Usage: python benchmarks/hostile_input.py --guard runs/cbrn/guard [--sizes 10000,100000,1000000] [--json OUT]
       [--skip-decoders] [--skip-server]
"""

from __future__ import annotations

import argparse
import codecs
import json
import random
import statistics
import string
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

BENIGN_PROMPT = "What's a good name for a cat?"
UPSTREAM_TEXT = "Whiskers, Miso or Pepper are all good names for a cat."
HOSTILE_CHARS = 199_000
_B64 = string.ascii_letters + string.digits + "+/"
_PARAGRAPH = (
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a lamp and a small notebook "
    "in which he wrote down the weather, the ships he had seen and anything else that seemed worth remembering. "
    "In winter the storms came in from the west and the whole tower shook, but the light never went out. "
)


def _fill(unit: str, n: int) -> str:
    return (unit * (n // len(unit) + 1))[:n]


def _random(alphabet: str, n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choices(alphabet, k=n))


def _b64_runs(n: int) -> str:
    rng = random.Random(3)
    parts, size = [], 0
    while size < n:
        run = "".join(rng.choices(_B64, k=rng.randint(8, 400))) + "=" * rng.randint(0, 2)
        parts.append(run)
        size += len(run) + 1
    return " ".join(parts)[:n]


def _binary_groups(n: int) -> str:
    rng = random.Random(4)
    return _fill(" ".join(format(rng.randrange(256), "08b") for _ in range(4096)) + " ", n)


def _short_words(n: int) -> str:
    rng = random.Random(5)
    parts, size = [], 0
    while size < n:
        w = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 7)))
        parts.append(w)
        size += len(w) + 1
    return " ".join(parts)[:n]


CASES: dict[str, Callable[[int], str]] = {
    "alnum_no_space": lambda n: _random(string.ascii_letters + string.digits, n, 1),
    "a@b.": lambda n: _fill("a@b.", n),
    "hex": lambda n: _random("0123456789abcdef", n, 2),
    "h4x0r": lambda n: _fill("h4x0r ", n),
    "spaced_a": lambda n: _fill("a ", n),
    "morse_.-": lambda n: _fill(".- ", n),
    "binary_groups": _binary_groups,
    "base64_runs": _b64_runs,
    "short_words": _short_words,
    "rot13_paragraph": lambda n: _fill(codecs.encode(_PARAGRAPH, "rot13"), n),
}


def _time(fn: Callable[[str], object], text: str, budget: float = 0.3, max_reps: int = 5) -> float:
    """Best of a few runs (up to ``budget`` seconds in all): the machine is shared, so the minimum is the signal."""
    best, spent, reps = float("inf"), 0.0, 0
    while reps < max_reps and (reps == 0 or spent < budget):
        t0 = time.perf_counter()
        fn(text)
        dt = time.perf_counter() - t0
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return best


def _k(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def part_a(sizes: list[int], cell_limit: float) -> list[dict]:
    from ccguard.views import decoded_views, decoders

    fns: list[tuple[str, Callable[[str], object]]] = [*decoders(), ("decoded_views", decoded_views)]
    rows: list[dict] = []
    w = max(len(f[0]) for f in fns) + 1
    cw = max(len(c) for c in CASES) + 1
    head = f"{'case':<{cw}} {'decoder':<{w}}" + "".join(f"{s:>11,}" for s in sizes)
    head += "".join(f"{f'r{_k(sizes[i + 1])}/{_k(sizes[i])}':>12}" for i in range(len(sizes) - 1))
    print("Part A: decoder time in seconds (best of a few runs); ratios ~10 per 10x size = linear")
    print(head)
    worst: dict[str, float] = {}
    for case, make in CASES.items():
        texts = {s: make(s) for s in sizes}
        for name, fn in fns:
            secs: list[float | None] = []
            for s in sizes:
                if secs and (secs[-1] is None or secs[-1] > cell_limit):
                    secs.append(None)
                    continue
                secs.append(_time(fn, texts[s]))
            ratios = [b / a if a and b and a > 0 else None for a, b in zip(secs, secs[1:], strict=False)]
            rows.append({"case": case, "decoder": name, "seconds": dict(zip(map(str, sizes), secs, strict=True)),
                         "ratios": ratios})
            cells = "".join(f"{x:>11.5f}" if x is not None else f"{'skipped':>11}" for x in secs)
            cells += "".join(f"{r:>12.1f}" if r is not None else f"{'-':>12}" for r in ratios)
            flag = "  <-- over the cell limit" if any(x is not None and x > cell_limit for x in secs) else ""
            print(f"{case:<{cw}} {name:<{w}}{cells}{flag}", flush=True)
            if secs[-1] is not None:
                worst[name] = max(worst.get(name, 0.0), secs[-1])
    print(f"slowest at {sizes[-1]:,} chars per decoder: " + ", ".join(f"{k} {v:.3f}s" for k, v in worst.items()))
    return rows


def _chat(url: str, content: str, timeout: float = 120.0) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": content}]},
                   timeout=timeout)
    dt = time.perf_counter() - t0
    try:
        detail = r.json()["choices"][0]["finish_reason"] if r.status_code == 200 else r.json()["error"]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        detail = r.text[:80]
    return r.status_code, dt, str(detail)


def _probe(url: str, stop: threading.Event, min_seconds: float) -> dict:
    """From two threads, until ``stop`` is set (and at least ``min_seconds`` have passed): GET /healthz every 50 ms,
    and benign chat requests back to back."""
    health: list[float] = []
    chats: list[float] = []
    chat_status: list[int] = []
    t_start = time.perf_counter()

    def done() -> bool:
        return stop.is_set() and time.perf_counter() - t_start >= min_seconds

    def poll_health() -> None:
        with httpx.Client(timeout=60) as c:
            while not done():
                t0 = time.perf_counter()
                c.get(f"{url}/healthz").raise_for_status()
                health.append(time.perf_counter() - t0)
                time.sleep(0.05)

    def poll_chat() -> None:
        while not done():
            status, dt, _ = _chat(url, BENIGN_PROMPT, timeout=60)
            chats.append(dt)
            chat_status.append(status)
            time.sleep(0.05)

    threads = [threading.Thread(target=poll_health), threading.Thread(target=poll_chat)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"healthz": health, "chat": chats, "chat_status": chat_status}


def _summ(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0, "p50_ms": None, "max_ms": None}
    return {"n": len(xs), "p50_ms": 1000 * statistics.median(xs), "max_ms": 1000 * max(xs)}


def _ms(v: float | None) -> str:
    return f"{v:>8.1f}" if v is not None else f"{'-':>8}"


def part_b(guard_dir: Path, baseline_seconds: float) -> list[dict]:
    from ccguard import Guard
    from ccguard.llm.base import create_backend
    from ccguard.server import ServerSettings, create_app
    from ccguard.server.loopback import FakeUpstream, serving

    guard = Guard.load(guard_dir)
    settings = ServerSettings()
    hostile = {"a@b. x 49,750": "a@b." * 49_750, "hex 199k": _random("0123456789abcdef", HOSTILE_CHARS, 7)}
    up = FakeUpstream(UPSTREAM_TEXT)
    rows: list[dict] = []
    with serving(up.app) as up_url, serving(create_app(guard, create_backend("openai", model="fake", base_url=f"{up_url}/v1"), settings)) as url:
        for _ in range(3):  # warm up the model and the connection path
            _chat(url, BENIGN_PROMPT)
        stop = threading.Event()
        stop.set()
        base = _probe(url, stop, baseline_seconds)
        rows.append({"scenario": "no hostile request", "hostile": None, **{k: _summ(base[k]) for k in ("healthz", "chat")},
                     "chat_status": sorted(set(base["chat_status"]))})
        for label, text in hostile.items():
            stop = threading.Event()
            result: dict = {}

            def send(text: str = text, result: dict = result, stop: threading.Event = stop) -> None:
                try:
                    result["status"], result["seconds"], result["detail"] = _chat(url, text, timeout=300)
                finally:
                    stop.set()

            t = threading.Thread(target=send)
            t.start()
            time.sleep(0.1)  # let the hostile request reach the server first
            probe = _probe(url, stop, 0.0)
            t.join()
            rows.append({"scenario": f"during hostile {label}", "hostile": {"chars": len(text), **result},
                         **{k: _summ(probe[k]) for k in ("healthz", "chat")}, "chat_status": sorted(set(probe["chat_status"]))})
    print(f"\nPart B: proxy on loopback (screen_timeout {settings.screen_timeout:g} s, screen_workers {settings.screen_workers}, "
          f"slots {settings.slots}); latencies in ms")
    print(f"{'scenario':<28} {'healthz n':>9} {'p50':>8} {'max':>8}  {'chat n':>6} {'p50':>8} {'max':>8} {'chat status':>11}"
          f"  hostile request")
    for r in rows:
        h, c = r["healthz"], r["chat"]
        hs = "-" if r["hostile"] is None else (f"{r['hostile']['status']} {r['hostile']['detail']} in "
                                                f"{r['hostile']['seconds']:.2f}s")
        print(f"{r['scenario']:<28} {h['n']:>9} {_ms(h['p50_ms'])} {_ms(h['max_ms'])}  {c['n']:>6} {_ms(c['p50_ms'])} "
              f"{_ms(c['max_ms'])} {','.join(map(str, r['chat_status'])):>11}  {hs}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guard", type=Path, default=Path("runs/cbrn/guard"))
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated input sizes in characters")
    ap.add_argument("--cell-limit", type=float, default=60.0, help="seconds; past it the rest of a row is skipped")
    ap.add_argument("--baseline-seconds", type=float, default=3.0, help="how long to probe with nothing hostile")
    ap.add_argument("--skip-decoders", action="store_true", help="skip part A")
    ap.add_argument("--skip-server", action="store_true", help="skip part B")
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args()

    sizes = sorted(int(s.replace("_", "")) for s in a.sizes.split(",") if s.strip())
    out: dict = {"sizes": sizes}
    if not a.skip_decoders:
        out["decoders"] = part_a(sizes, a.cell_limit)
    if not a.skip_server:
        out["server"] = part_b(a.guard, a.baseline_seconds)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
