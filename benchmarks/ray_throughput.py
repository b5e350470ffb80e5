"""Scoring throughput: `ccguard score` in one process (the local engine) against `--engine ray` with N workers, on
the same N prompts, end to end as a user runs it (process start, model loads and, for Ray, starting a local Ray and
its actors, all included). Each engine also scores a small file (`--small`); the difference between the two runs
gives its steady records/s with the fixed start-up cost taken out. Prints a Markdown table and checks that both
engines wrote the same records.

Prompts come from a run's test split (`--data runs/cbrn/data`), or else from the bundled constitution's seed queries,
repeated with a numbered prefix until there are `--n` distinct ones. Ray joins RAY_ADDRESS when it is set.

Usage: python benchmarks/ray_throughput.py --guard runs/cbrn/guard [--data runs/cbrn/data] [--n 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def prompts(data: Path | None, n: int) -> list[str]:
    if data is not None:
        base = [json.loads(line)["prompt"] for line in (data / "test.jsonl").read_text().splitlines() if line.strip()]
        base = [p for p in base if isinstance(p, str)]
    else:
        from ccguard import constitution

        base = [q for c in constitution.load("cbrn").categories for q in c.seeds.queries]
    # Distinct texts, so no engine gains from scoring repeated windows once.
    return [base[i % len(base)] if i < len(base) else f"({i // len(base)}) {base[i % len(base)]}" for i in range(n)]


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "ccguard.cli", "score", *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"ccguard score failed:\n{r.stderr}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guard", type=Path, default=Path("runs/cbrn/guard"))
    ap.add_argument("--data", type=Path, default=None, help="run data directory with test.jsonl (default: bundled seeds)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="Ray worker counts to measure")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--small", type=int, default=64, help="records in the run that measures start-up")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        texts = prompts(a.data, a.n)
        for name, k in (("in", a.n), ("small", a.small)):
            Path(tmp, f"{name}.jsonl").write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(texts[:k])))
        engines = [("local (1 process)", "local", 1, [])]
        engines += [("ray", f"ray{w}", w, ["--engine", "ray", "--workers", str(w)]) for w in a.workers]
        rows = []
        for engine, tag, w, extra in engines:
            walls = [run(["--guard", str(a.guard), "--in", f"{tmp}/{name}.jsonl", "--out", f"{tmp}/{name}-{tag}.jsonl",
                          "--batch-size", str(a.batch_size), *extra]) for name in ("small", "in")]
            rows.append((engine, w, walls[1], walls[0], (a.n - a.small) / max(1e-9, walls[1] - walls[0])))
        local = [json.loads(line) for line in Path(f"{tmp}/in-local.jsonl").read_text().splitlines()]
        for w in a.workers:
            got = [json.loads(line) for line in Path(f"{tmp}/in-ray{w}.jsonl").read_text().splitlines()]
            same = len(got) == len(local) and all(
                g["id"] == x["id"] and g["input_flagged"] == x["input_flagged"]
                and abs(g["input_score"] - x["input_score"]) <= 1e-4 for g, x in zip(got, local, strict=True))
            if not same:
                sys.exit(f"ray with {w} workers disagrees with the local engine")

    print(f"{a.n} prompts, batch size {a.batch_size}, guard {a.guard}. records/s and wall s: end to end (process "
          f"start, model loads, Ray start-up included); start-up s: wall for {a.small} records; steady records/s: "
          f"(n - {a.small}) / (wall - start-up).\n")
    print("| engine | workers | records/s | wall s | start-up s | steady records/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for engine, w, wall, startup, steady in rows:
        print(f"| {engine} | {w} | {a.n / wall:.1f} | {wall:.1f} | {startup:.1f} | {steady:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
