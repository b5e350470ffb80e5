"""``ccguard eval``: score suites with a guard and with the baselines, and write the report."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from ccguard.evaluate import plots
from ccguard.evaluate.metrics import auprc, auroc, flagged_rate, threshold_at_fpr, tpr_at_fpr
from ccguard.evaluate.report import render_html as report_html
from ccguard.evaluate.suite import EvalItem, Suite, compose_set, expand, load_set
from ccguard.policy import stop_char
from ccguard.records import atomic_write_text


def all_baselines() -> tuple[str, ...]:
    """Every registered baseline (built-in and plugin)."""
    from ccguard.registry import REGISTRY

    return tuple(REGISTRY.names("baseline"))
# A 200-token everyday request, for compute per request (the same text benchmarks/input_latency.py times).
EVERYDAY_TEXT = (
    "I'm planning a two-week trip to Portugal in late September with my partner and our two kids, aged 7 and 11. "
    "We want to split the time between Lisbon, Porto and somewhere on the coast where the kids can swim. "
    "We don't want to rent a car unless it's really necessary, so trains and buses are preferred. "
    "Could you suggest an itinerary with how many nights to spend in each place, a couple of family-friendly "
    "activities per stop, and rough costs for transport between the cities? Also, what should we know about "
    "restaurant hours, tipping, and whether the kids will need anything special for the beaches that time of year? "
    "One of them is a picky eater, so simple food options would help too. Thanks a lot for any tips you can share "
    "about neighbourhoods to stay in as well. We would also like one day trip from Lisbon, maybe Sintra or "
    "Cascais, and ideas for a rainy day in Porto in case the weather turns. If there are any festivals or local "
    "events around then, let us know, and tell us which sights are worth booking ahead so we don't queue for hours."
)


def set_metrics(y: np.ndarray, s: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """Rates at ``threshold`` (None: a system with no calibrated threshold, curve metrics only) and over its curve."""
    both = len(set(y.tolist())) == 2
    return {
        "n": int(len(y)),
        "flagged": None if threshold is None else flagged_rate(s.tolist(), threshold).model_dump(),
        "tpr": None if threshold is None else flagged_rate(s[y == 1].tolist(), threshold).model_dump(),
        "fpr": None if threshold is None else flagged_rate(s[y == 0].tolist(), threshold).model_dump(),
        "auroc": auroc(y, s) if both else None,
        "auprc": auprc(y, s) if both else None,
        "tpr_at_fpr": {f"{f:g}": (tpr_at_fpr(y, s, f) if both else None) for f in (0.001, 0.01, 0.05)},
    }


def _breakdown(items: list[EvalItem], s: np.ndarray, threshold: float, key: str) -> dict[str, Any]:
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        # A composed example counts once for each family in it (encoding+framing -> encoding, framing).
        keys = (it.family or "none").split("+") if key == "family" else [getattr(it, key) or "?"]
        for k in dict.fromkeys(keys):
            groups.setdefault(k, []).append(i)
    out = {}
    for k, idx in sorted(groups.items()):
        out[k] = {
            "harmful_flagged": flagged_rate([s[i] for i in idx if items[i].label == 1], threshold).model_dump(),
            "harmless_flagged": flagged_rate([s[i] for i in idx if items[i].label == 0], threshold).model_dump(),
        }
    return out


def _load_baselines(names: tuple[str, ...], guard: Any, run_dir: Path | None, const: Any, console: Console) -> tuple[dict[str, Any], dict[str, float]]:
    """Build the requested baselines and calibrate each at the guard's target FPR on the run's val split."""
    from ccguard.evaluate.baselines import BaselineContext
    from ccguard.records import read_examples, render_prompt
    from ccguard.registry import REGISTRY

    out: dict[str, Any] = {}
    has_data = run_dir is not None and (run_dir / "data" / "train.jsonl").is_file()
    ctx = BaselineContext(const=const, run_dir=run_dir, guard=guard, console=console)
    skipped = []
    for name in names:
        entry = REGISTRY.get("baseline", name)
        if (entry.meta.get("needs_data") and not has_data) or (entry.meta.get("needs_constitution") and const is None):
            skipped.append(name)
            continue
        out[name] = entry.factory(ctx)
    if skipped:
        console.print(f"[yellow]baselines {', '.join(skipped)} skipped: the guard has no run data or constitution beside it[/]")
    thresholds: dict[str, float] = {}
    if run_dir is not None and (run_dir / "data" / "val.jsonl").is_file():
        val = [e for e in read_examples(run_dir / "data" / "val.jsonl") if e.label == "harmless"]
        target = float(guard.manifest.config.get("target_fpr", 0.005))
        texts = [render_prompt(e.prompt) for e in val]
        for name, b in out.items():
            thresholds[name] = threshold_at_fpr(b.score(texts).tolist(), target)
    else:
        for name in out:
            thresholds[name] = 0.5
    return out, thresholds


def overhead(guard: Any, prompt_tokens: int = 200, response_tokens: int = 300, guarded_params: float = 134.5e6) -> dict[str, Any]:
    """Classifier FLOPs per token against the guarded model's (2 x parameters per token, the usual estimate)."""
    n_in = sum(p.numel() for p in guard.input_classifier.model.parameters())
    n_out = sum(p.numel() for p in guard.output_classifier.model.parameters()) if guard.output_classifier else 0
    clf = 2 * n_in * prompt_tokens + 2 * n_out * response_tokens
    llm = 2 * guarded_params * (prompt_tokens + response_tokens)
    return {
        "input_params": n_in, "output_params": n_out, "guarded_params": guarded_params,
        "exchange": {"prompt_tokens": prompt_tokens, "response_tokens": response_tokens},
        "flops_ratio": clf / llm,
        "flops_ratio_vs_8b": clf / (2 * 8e9 * (prompt_tokens + response_tokens)),
    }


def wall_overhead(guard: Any, n: int = 4, max_tokens: int = 64) -> dict[str, Any]:
    """Measured: local SmolLM2 generating, against the guard's input check plus streaming output screening."""
    from ccguard.llm.base import GenerateParams, create_backend
    from ccguard.records import Message

    llm = create_backend("local", model="smollm2")
    prompts = ["Give me three tips for a job interview.", "Explain photosynthesis simply.",
               "Write a haiku about autumn.", "How do I make a budget?"][:n]
    gen_s = guard_s = 0.0
    tokens = 0
    for p in prompts:
        t0 = time.perf_counter()
        c = llm.generate_sync([Message(role="user", content=p)], GenerateParams(max_tokens=max_tokens, temperature=0.0))
        gen_s += time.perf_counter() - t0
        tokens += c.usage.completion_tokens
        t0 = time.perf_counter()
        guard.check_input(p)
        if guard.output_classifier is not None:
            guard.check_output(p, c.text)
        guard_s += time.perf_counter() - t0
    return {"generation_seconds": gen_s, "guard_seconds": guard_s, "ratio": guard_s / gen_s, "generated_tokens": tokens}


def _rubric(judge: Any, sets: dict[str, list[EvalItem]], console: Console) -> dict[str, Any]:
    """Grade responses that come with a reference answer; skipped with a message when no judge is configured."""
    import asyncio

    from ccguard.evaluate.rubric import grade, skipped_message

    graded = {k: [it for it in v if it.reference and it.response] for k, v in sets.items()}
    graded = {k: v for k, v in graded.items() if v}
    if judge is None:
        console.print(f"[dim]{skipped_message()}[/]")
        return {"skipped": skipped_message()}
    if not graded:
        return {"skipped": "rubric grading skipped: no set has a reference_field"}

    async def go() -> dict[str, Any]:
        out = {}
        for k, items in graded.items():
            gs = [await grade(judge, it.query or it.prompt, it.reference or "", it.response or "") for it in items]
            out[k] = {"n": len(gs), "mean_score": float(np.mean([g.score for g in gs]))}
        await judge.aclose()
        return out

    return asyncio.run(go())


def cascade_ablation(guard: Any, texts: list[Any], y: np.ndarray, all_scores: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each input stage alone and the cascade, side by side (stage 2 reads every prompt here, not only the escalated
    ones); stage 1 and the cascade at their calibrated threshold (stage 2 alone has none: only its curve)."""
    from ccguard.cascade import cascade_decision, part_scores, stage1_score, stage2_score

    pol = guard.policy
    parts = part_scores(guard, texts)
    dec = [cascade_decision(p, pol) for p in parts]
    rows = {"stage1": (np.array([stage1_score(p, pol) for p in parts]), pol.input_threshold),
            "stage2": (np.array([stage2_score(p, pol) for p in parts]), None),
            "cascade": (np.array([d[0] for d in dec]), pol.input_threshold)}
    out = {}
    for name, (sc, t) in rows.items():
        out[name] = set_metrics(y, sc, t)
        all_scores[name] = sc
    esc = np.array([d[1] for d in dec], dtype=float)
    out["cascade"]["escalated"] = {"all": float(esc.mean()), "harmless": float(esc[y == 0].mean()) if (y == 0).any() else None,
                                   "harmful": float(esc[y == 1].mean()) if (y == 1).any() else None}
    return out


def latency_ms(fn: Any, n: int, warmup: int = 1) -> tuple[float, float]:
    """Median and 95th-percentile milliseconds of ``n`` calls of ``fn`` (after ``warmup`` untimed ones)."""
    for _ in range(warmup):
        fn()
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        lat.append(1000 * (time.perf_counter() - t0))
    lat.sort()
    return statistics.median(lat), lat[min(n - 1, int(0.95 * n))]


def stage_latency(guard: Any, text: str, n: int = 20) -> dict[str, float]:
    """Median ms of one input check by stage 1 alone and of one stage-2 read, on ``text``."""
    from ccguard.policy import Policy

    alone = Policy(input_threshold=guard.policy.input_threshold, history_margin=guard.policy.history_margin)
    stage1_guard = type(guard)(guard.manifest, guard.input_classifier, alone, guard.output_classifier, guard.probe)
    return {"stage1_ms": latency_ms(lambda: stage1_guard.check_input(text), n)[0],
            "stage2_ms": latency_ms(lambda: guard.stage2.scores([text]), n)[0]}


def cascade_cost(guard: Any, suites: dict[str, Any], tokens: int = 200) -> dict[str, Any]:
    """Compute per request on everyday traffic: stage 1's and stage 2's time on a ``tokens``-token everyday prompt,
    and the cascade's mean, stage 1 plus stage 2 on the escalated share of everyday requests (the dev suite's
    benign prompts when it ran, else the synthetic test split's harmless ones)."""
    clf = guard.input_classifier
    text = clf.tokenizer.decode(clf.token_ids(EVERYDAY_TEXT)[:tokens])
    lat = stage_latency(guard, text)
    where, rate = None, None
    for suite, name in (("dev", "benign"), ("synthetic", "test_prompts")):
        esc = (suites.get(suite, {}).get(name, {}).get("cascade") or {}).get("escalated")
        if esc and esc.get("harmless") is not None:
            where, rate = f"{suite}/{name} harmless", esc["harmless"]
            break
    out: dict[str, Any] = {"prompt_tokens": len(clf.token_ids(text)), **lat, "escalation_rate": rate, "escalation_set": where}
    if rate is not None:
        out["cascade_ms"] = lat["stage1_ms"] + rate * lat["stage2_ms"]
        out["cost_ratio"] = out["cascade_ms"] / lat["stage1_ms"]
    return out


def _latency(guard: Any, texts: list[str], n: int = 40) -> dict[str, float]:
    lat = []
    for t in texts[:n]:
        t0 = time.perf_counter()
        guard.check_input(t)
        lat.append(1000 * (time.perf_counter() - t0))
    lat.sort()
    return {"p50_ms": statistics.median(lat), "p95_ms": lat[min(len(lat) - 1, int(0.95 * len(lat)))], "n": len(lat)}


def run_eval(
    guard_dir: Path,
    suites: list[Suite],
    out_dir: Path,
    *,
    baselines: tuple[str, ...] | None = None,
    max_items: int | None = None,
    wall: bool = False,
    judge: Any = None,
    console: Console | None = None,
) -> dict[str, Any]:
    from ccguard import constitution as C
    from ccguard.guard import Guard

    console = console or Console(stderr=True)
    guard_dir = Path(guard_dir)
    guard = Guard.load(guard_dir)
    run_dir = guard_dir.parent if (guard_dir.parent / "data").is_dir() else None
    const_file = guard_dir / "constitution.yaml"
    const = C.load(const_file) if const_file.is_file() else None
    terms = tuple(const.harmful_terms()) if const else ()
    t_all = time.perf_counter()
    systems, thresholds = _load_baselines(all_baselines() if baselines is None else baselines, guard, run_dir, const, console)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"guard": str(guard_dir), "constitution": guard.manifest.constitution, "suites": {}, "skipped": {}}
    plot_files: list[tuple[str, Path]] = []
    all_sets: dict[str, list[EvalItem]] = {}
    thr_in = guard.policy.input_threshold
    for suite in suites:
        missing = [p for p in (expand(r, run_dir) for r in suite.requires) if not Path(p).exists()]
        if missing:
            msg = f"suite {suite.name!r} skipped: {', '.join(missing)} not found"
            console.print(f"[yellow]{msg}[/]")
            report["skipped"][suite.name] = msg
            continue
        sets = {s.name: load_set(s.model_copy(update={"max_items": s.max_items or max_items}), run_dir) for s in suite.sets}
        kinds = {s.name: s.kind for s in suite.sets}
        for comp in suite.compose:
            n = min(comp.n, max_items) if max_items else comp.n
            sets[comp.name] = compose_set(comp.model_copy(update={"n": n}), sets, run_dir, terms)
            kinds[comp.name] = "prompts"
        all_sets.update({f"{suite.name}/{k}": v for k, v in sets.items()})
        res: dict[str, Any] = {}
        hist: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, items in sets.items():
            if not items:
                continue
            y = np.array([it.label for it in items])
            t0 = time.perf_counter()
            if kinds[name] == "responses":
                if guard.output_classifier is None:
                    continue
                ex = guard.output_classifier.score([it.prompt for it in items], [it.response or "" for it in items])
                secs = time.perf_counter() - t0
                s = np.array([e.score for e in ex])
                thr = guard.policy.output_threshold
                m = {"ccguard": set_metrics(y, s, thr)}
                fr = [stop_char(e.token_scores, e.token_starts, thr, guard.output_classifier.spec.chunk_tokens) for e in ex]
                released = [f / max(1, len(it.response or "")) for f, it in zip(fr, items, strict=True) if f is not None and it.label == 1]
                m["ccguard"]["median_released_fraction"] = float(np.median(released)) if released else None
                m["ccguard"]["throughput_per_s"] = len(items) / secs
            else:
                texts = [it.prompt for it in items]
                s = np.array([v.score for v in guard.check_inputs(texts)])
                secs = time.perf_counter() - t0
                thr = thr_in
                m = {"ccguard": set_metrics(y, s, thr)}
                m["ccguard"]["throughput_per_s"] = len(items) / secs
                m["ccguard"]["by_category"] = _breakdown(items, s, thr, "category")
                m["ccguard"]["by_family"] = _breakdown(items, s, thr, "family")
                all_scores = {"ccguard": s}
                if guard.stage2 is not None:
                    m.update(cascade_ablation(guard, texts, y, all_scores))
                    m["ccguard"]["escalated"] = m["cascade"]["escalated"]
                for bname, b in systems.items():
                    bs = b.score(texts)
                    all_scores[bname] = bs
                    m[bname] = set_metrics(y, bs, thresholds[bname])
                    m[bname]["by_family"] = _breakdown(items, bs, thresholds[bname], "family")
                if len(set(y.tolist())) == 2:
                    p = plots.roc_curves(out_dir / f"roc_{suite.name}_{name}.png", f"{suite.name}/{name}: ROC", y, all_scores)
                    plot_files.append((f"ROC, {suite.name}/{name}", p))
                    if name.startswith("jailbreak") or name.startswith("test"):
                        fam = {k: (v["harmful_flagged"]["rate"] or 0.0, v["harmless_flagged"]["rate"] or 0.0)
                               for k, v in m["ccguard"]["by_family"].items()}
                        p = plots.family_bars(out_dir / f"families_{suite.name}_{name}.png", fam)
                        plot_files.append((f"Block rate per transform family, {suite.name}/{name}", p))
                        p = plots.threshold_tradeoff(out_dir / f"tradeoff_{suite.name}_{name}.png", y, s, thr, f"{suite.name}/{name}")
                        plot_files.append((f"Threshold / FPR trade-off, {suite.name}/{name}", p))
            hist[name] = (y, s)
            res[name] = m
            console.print(f"{suite.name}/{name}: n={len(items)} flagged {m['ccguard']['flagged']['rate']:.3f}"
                          + (f", AUROC {m['ccguard']['auroc']:.4f}" if m["ccguard"]["auroc"] is not None else ""))
        if hist:
            p = plots.histograms(out_dir / f"hist_{suite.name}.png", hist, thr_in)
            plot_files.append((f"Score histograms, {suite.name} (input threshold shown)", p))
        texts = [it.prompt for n_, its in sets.items() if kinds[n_] == "prompts" for it in its][:40]
        if texts:
            res["_latency_input"] = _latency(guard, texts)
        report["suites"][suite.name] = res
    if guard.stage2 is not None:
        report["cascade_cost"] = cascade_cost(guard, report["suites"])
    report["rubric"] = _rubric(judge, all_sets, console)
    report["overhead"] = overhead(guard)
    if wall:
        report["overhead"]["wall"] = wall_overhead(guard)
    report["baseline_thresholds"] = thresholds
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2))
    md = render_markdown(report)
    atomic_write_text(out_dir / "report.md", md)
    atomic_write_text(out_dir / "report.html", render_html(md, plot_files))
    return report


def _pct(r: dict[str, Any] | None) -> str:
    if not r or r.get("rate") is None:
        return "n/a"
    return f"{100 * r['rate']:.1f}% [{100 * r['lo']:.1f}–{100 * r['hi']:.1f}]"


def _f(x: float | None, nd: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def render_markdown(r: dict[str, Any]) -> str:
    lines = [f"# ccguard eval: {r['constitution'].get('name')}", "", f"Guard `{r['guard']}`; {r['seconds']:.0f}s.", ""]
    for msg in r["skipped"].values():
        lines += [f"*{msg}*", ""]
    for sname, sets in r["suites"].items():
        lines += [f"## Suite `{sname}`", ""]
        lat = sets.get("_latency_input")
        if lat:
            lines += [f"Input check latency, one request at a time: p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms.", ""]
        for name, m in sets.items():
            if name.startswith("_"):
                continue
            lines += [f"### {name} (n={m['ccguard']['n']})", "",
                      "| system | flagged (95% CI) | TPR | FPR | AUROC | AUPRC | TPR@0.1% | TPR@1% | TPR@5% |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for sys_name, x in m.items():
                t = x["tpr_at_fpr"]
                lines.append(f"| {sys_name} | {_pct(x['flagged'])} | {_pct(x['tpr'])} | {_pct(x['fpr'])} | {_f(x['auroc'])} | "
                             f"{_f(x['auprc'])} | {_f(t['0.001'], 3)} | {_f(t['0.01'], 3)} | {_f(t['0.05'], 3)} |")
            c = m["ccguard"]
            if c.get("escalated"):
                e = c["escalated"]
                kinds = [f"{100 * e[k]:.1f}% of {k}" for k in ("harmless", "harmful") if e[k] is not None]
                lines.append(f"\nEscalated to the cascade's stage 2: {100 * e['all']:.1f}% of this set ({', '.join(kinds)}).")
            if c.get("median_released_fraction") is not None:
                lines.append(f"\nMedian fraction of a flagged harmful response released before halting: {c['median_released_fraction']:.3f}.")
            if "throughput_per_s" in c:
                lines.append(f"\nccguard throughput on this set: {c['throughput_per_s']:.1f} items/s.")
            fams = c.get("by_family") or {}
            if len(fams) > 1:
                lines += ["", "| transform family | harmful blocked | harmless blocked |", "|---|---|---|"]
                for k, v in fams.items():
                    lines.append(f"| {k} | {_pct(v['harmful_flagged'])} | {_pct(v['harmless_flagged'])} |")
            cats = c.get("by_category") or {}
            if 1 < len(cats) <= 40:
                lines += ["", "| category | harmful flagged | harmless flagged |", "|---|---|---|"]
                for k, v in cats.items():
                    lines.append(f"| {k} | {_pct(v['harmful_flagged'])} | {_pct(v['harmless_flagged'])} |")
            lines.append("")
    cc = r.get("cascade_cost")
    if cc:
        lines += ["## Input cascade: compute per request", "",
                  f"On a {cc['prompt_tokens']}-token everyday prompt: stage 1 {cc['stage1_ms']:.1f} ms, stage 2 "
                  f"{cc['stage2_ms']:.1f} ms (median of 20)."]
        if cc.get("cascade_ms") is not None:
            lines.append(f"Escalated: {100 * cc['escalation_rate']:.2f}% of {cc['escalation_set']} prompts, so the cascade "
                         f"costs {cc['cascade_ms']:.1f} ms per everyday request on average, **{cc['cost_ratio']:.2f}x** "
                         "stage 1 alone.")
        lines.append("")
    o = r["overhead"]
    lines += ["## Compute overhead", "",
              f"Classifier FLOPs against the guarded model's for a {o['exchange']['prompt_tokens']}-token prompt and "
              f"{o['exchange']['response_tokens']}-token response: **{100 * o['flops_ratio']:.1f}%** of SmolLM2-135M, "
              f"{100 * o['flops_ratio_vs_8b']:.2f}% of an 8B model (input {o['input_params'] / 1e6:.1f}M, output "
              f"{o['output_params'] / 1e6:.1f}M parameters)."]
    if "wall" in o:
        w = o["wall"]
        lines.append(f"\nMeasured wall time: guard {w['guard_seconds']:.2f}s against SmolLM2 generating {w['generated_tokens']} tokens in "
                     f"{w['generation_seconds']:.2f}s: **{100 * w['ratio']:.1f}%**.")
    rub = r.get("rubric") or {}
    lines += ["", "## Rubric grading", ""]
    if "skipped" in rub:
        lines.append(f"*{rub['skipped']}*")
    for k, v in rub.items():
        if k != "skipped":
            lines.append(f"- {k}: mean rubric coverage {v['mean_score']:.3f} (n={v['n']})")
    lines.append("")
    return "\n".join(lines)


def render_html(md: str, plots_: list[tuple[str, Path]]) -> str:
    return report_html("ccguard evaluation report", md, plots_)
