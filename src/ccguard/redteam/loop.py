"""Close the loop: red-team the guard, train on what got through, and measure again.

Held-out harmful queries (the run's test split, base queries only) are split in two halves. Evasions found on half
A go into training; evasions found on half B are never trained on, so the block rate on B after retraining is an
out-of-sample number. Before retraining both evasion sets are, by construction, fully missed.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from ccguard.errors import CcguardError
from ccguard.policy import calibrate_input, flagged_rate
from ccguard.records import atomic_write_text, read_examples, render_prompt, write_jsonl
from ccguard.redteam.search import SearchConfig, redteam


def run_redteam(
    guard_dir: Path,
    out_guard: Path | None,
    *,
    n_queries: int = 40,
    cfg: SearchConfig | None = None,
    retrain_steps: int = 150,
    console: Console | None = None,
    attacker: Any = None,
    attack_cfg: Any = None,
) -> dict[str, Any]:
    """Search-based red teaming (and LLM-driven, given an ``attacker`` :class:`~ccguard.llm.client.LLMClient`) on
    held-out harmful queries, then retraining on the evasions of half A and measuring on those of half B."""
    from ccguard import constitution as C
    from ccguard.guard import Guard
    from ccguard.synth.pool import load_pool
    from ccguard.transforms.base import TransformContext, load_framings

    console = console or Console(stderr=True)
    cfg = cfg or SearchConfig()
    guard_dir = Path(guard_dir)
    run_dir = guard_dir.parent
    if not (run_dir / "data" / "test.jsonl").is_file():
        raise CcguardError("red teaming needs the run's data beside the guard (data/test.jsonl)", where=str(guard_dir))
    guard = Guard.load(guard_dir)
    const = C.load(guard_dir / "constitution.yaml")
    pool = load_pool(const.benign_pool) if const.benign_pool else None
    ctx = TransformContext(rng=random.Random(cfg.seed), terms=tuple(const.harmful_terms()),
                           pool=tuple(pool.pairs()) if pool else (), framings=load_framings())
    clf = guard.input_classifier
    thr = guard.policy.input_threshold
    queries = [e for e in read_examples(run_dir / "data" / "test.jsonl") if e.label == "harmful" and not e.lineage]
    # Only queries the guard blocks as written: an evasion is a transform that gets a blocked request through.
    scores = clf.score([render_prompt(q.prompt) for q in queries])
    queries = [q for q, s in zip(queries, scores, strict=True) if s.score > thr]
    random.Random(cfg.seed).shuffle(queries)
    queries = queries[:n_queries]
    half = len(queries) // 2
    qa, qb = queries[:half], queries[half:]
    console.print(f"red teaming {len(queries)} held-out harmful queries (beam {cfg.beam}, depth {cfg.depth}) ...")
    ev_a, stats_a = redteam(clf, qa, thr, ctx, cfg)
    ev_b, stats_b = redteam(clf, qb, thr, ctx, replace(cfg, seed=cfg.seed + 1))
    rt_dir = run_dir / "redteam"
    before_llm: dict[str, Any] = {}
    if attacker is not None:
        from ccguard.llm.client import run_sync
        from ccguard.redteam.llm_attack import AttackConfig, llm_redteam

        acfg = attack_cfg or AttackConfig(seed=cfg.seed)
        console.print(f"LLM red teaming with {attacker.spec.kind}:{attacker.spec.model} ({acfg.rounds} rounds) ...")

        async def attack() -> tuple[Any, Any]:
            a = await llm_redteam(attacker, clf, thr, qa, const, acfg, rt_dir / "llm_jobs" / "a")
            b = await llm_redteam(attacker, clf, thr, qb, const, replace(acfg, seed=acfg.seed + 1), rt_dir / "llm_jobs" / "b")
            return a, b

        (lev_a, lstats_a), (lev_b, lstats_b) = run_sync(attacker, attack)
        ev_a, ev_b = ev_a + lev_a, ev_b + lev_b
        before_llm = {"llm_evasion_rate_train_half": lstats_a["evasion_rate"], "llm_evasion_rate_heldout_half": lstats_b["evasion_rate"],
                      "llm_train_half": lstats_a, "llm_heldout_half": lstats_b}
        console.print(f"LLM evasion rate: {lstats_a['evasion_rate']:.2f} (A), {lstats_b['evasion_rate']:.2f} (B); "
                      f"{len(lev_a)} + {len(lev_b)} evasions")
    write_jsonl(rt_dir / "evasions_train.jsonl", ev_a)
    write_jsonl(rt_dir / "evasions_heldout.jsonl", ev_b)
    before = {"evasion_rate_train_half": stats_a["evasion_rate"], "evasion_rate_heldout_half": stats_b["evasion_rate"],
              "search_train_half": stats_a, "search_heldout_half": stats_b, **before_llm}
    console.print(f"evasion rate before retraining: {stats_a['evasion_rate']:.2f} (A), {stats_b['evasion_rate']:.2f} (B); "
                  f"{len(ev_a)} + {len(ev_b)} evasions")
    report: dict[str, Any] = {"before": before}
    if not ev_a or out_guard is None:
        atomic_write_text(rt_dir / "report.json", json.dumps(report, indent=2))
        return report

    report["after"] = retrain_on_evasions(guard, run_dir, ev_a, ev_b, Path(out_guard), retrain_steps,
                                          {k: v for k, v in before.items() if "rate" in k}, "evasions", console, const)
    atomic_write_text(rt_dir / "report.json", json.dumps(report, indent=2))
    return report


def retrain_on_evasions(guard: Any, run_dir: Path, ev_a: list[Any], ev_b: list[Any], out_guard: Path,
                        retrain_steps: int, before: dict[str, Any], what: str, console: Console,
                        const: Any = None) -> dict[str, Any]:
    """Continue training the guard's input classifier on the run's training split plus ``ev_a`` (oversampled, so a
    short run sees each several times), recalibrate as the pipeline did, write the new guard to ``out_guard``, and
    return the block rates on ``ev_a`` and the held-out ``ev_b`` after it. ``before`` goes into the manifest. A guard
    trained with style weights (``debias``) is retrained with them, which needs its constitution ``const``."""
    from ccguard.guard import GuardManifest
    from ccguard.train.args import TrainArgs
    from ccguard.train.debias import training_weights
    from ccguard.train.input import train_input

    clf = guard.input_classifier
    train = read_examples(run_dir / "data" / "train.jsonl")
    args = TrainArgs.from_dict(guard.manifest.input.training["args"])
    args = replace(args, max_steps=retrain_steps, lr=args.lr / 2, warmup_ratio=0.0, max_examples=None)
    rows = train + ev_a * 4
    if args.debias > 0 and const is None:
        raise CcguardError("retraining a style-debiased guard needs its constitution", where="retrain_on_evasions")
    weights, _ = training_weights(rows, const, "input", args)
    clf2, stats = train_input(rows, list(clf.categories), args, init=clf, weights=weights)
    # Recalibrate exactly as the pipeline did, with the same targets.
    val = read_examples(run_dir / "data" / "val.jsonl")
    calib_file = run_dir / "data" / "calib.jsonl"
    extra = read_examples(calib_file) if calib_file.is_file() else []
    old = guard.manifest.input.calibration
    calib_scores = [s.score for s in clf2.score([render_prompt(e.prompt) for e in extra])]
    cal = calibrate_input(val, [s.score for s in clf2.score([render_prompt(e.prompt) for e in val])], extra, calib_scores,
                          target_fpr=old.target_fpr, family_fpr=old.family_fpr, hard_fpr=old.hard_fpr_cap)

    def block(evs: list[Any], c: Any, t: float) -> dict[str, Any]:
        return flagged_rate([s.score for s in c.score([render_prompt(e.prompt) for e in evs])], t).model_dump() if evs else {}

    after = {
        "threshold": cal.threshold,
        "val_fpr": cal.fpr.model_dump(),
        "val_tpr": cal.tpr.model_dump(),
        "val_tpr_before": guard.manifest.input.calibration.tpr.model_dump(),
        f"block_rate_train_{what}": block(ev_a, clf2, cal.threshold),
        f"block_rate_heldout_{what}": block(ev_b, clf2, cal.threshold),
        "training": stats,
    }
    guard_dir = Path(guard.path)
    tmp = out_guard.with_name(out_guard.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(guard_dir, tmp)
    shutil.rmtree(tmp / "input")
    clf2.save(tmp / "input")
    m = guard.manifest.model_dump()
    m["input"]["calibration"] = cal.model_dump()
    m["config"]["input_precision"] = clf2.precision  # the precision the new threshold was calibrated in
    if (m.get("stages") or {}).pop("cascade", None) is not None:
        # Its thresholds were calibrated on the old stage 1's scores: re-run `ccguard cascade` on the new guard.
        shutil.rmtree(tmp / "cascade", ignore_errors=True)
    m["input"]["training"] = {**m["input"]["training"], "redteam_retrain": {"args": args.to_dict(), **stats, what: len(ev_a)}}
    m.setdefault("metrics", {})["redteam" if what == "evasions" else f"redteam_{what}"] = {
        "before": before, "after": {k: after[k] for k in (f"block_rate_train_{what}", f"block_rate_heldout_{what}")}}
    atomic_write_text(tmp / "guard.json", GuardManifest.model_validate(m).model_dump_json(indent=2))
    shutil.rmtree(out_guard, ignore_errors=True)
    tmp.rename(out_guard)
    b = after[f"block_rate_heldout_{what}"]
    console.print(f"after retraining: held-out {what} blocked {b.get('rate', 0):.2f}, train {what} blocked "
                  f"{after[f'block_rate_train_{what}'].get('rate', 0):.2f}, val FPR {cal.fpr.fmt()}; new guard {out_guard}")
    return after
