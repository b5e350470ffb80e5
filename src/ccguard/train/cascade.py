"""Train the input cascade's stage 2 and calibrate the cascade end to end (``ccguard cascade``,
``ccguard run --profile cascade``).

1. Stage 2's head is fitted on features of a sample of the run's training prompts, each read in the decoded view
   stage 1 scores highest. On the other splits stage 2 reads only the escalated texts, as in service. A classifier
   stage (``CascadeSpec.kind == 'classifier'``) is an input classifier trained by its own run, e.g. on a multilingual
   backbone (``ccguard run --profile multilingual``), and is copied into the guard as it is.
2. The escalation threshold is set on the validation split's everyday requests at ``escalation`` (the share of
   everyday traffic that pays for stage 2), never above stage 1's own threshold.
3. For each ensemble weight up to ``spec.weight``, the cascade's threshold is calibrated exactly as stage 1's was (the
   guard's target FPR on everyday traffic, hard neighbours and transform families capped); the weight with the highest
   validation TPR wins.
4. Stage 1 alone and the cascade are scored on the validation and test splits (``ccguard eval`` adds stage 2
   alone). All of it goes into ``stages.cascade`` of guard.json, and the head into ``cascade/``. The guard still
   loads and works without them.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ccguard.cascade import (
    CASCADE_DIR,
    CascadeSpec,
    ClassifierStage2,
    PartScores,
    Stage2,
    cascade_decision,
    screened,
)
from ccguard.errors import CcguardError
from ccguard.heads import LinearHead
from ccguard.policy import Calibration, Policy, calibrate_input, ensemble, is_everyday, threshold_at_fpr
from ccguard.records import Example, atomic_write_text, half_harmful, read_examples

DEFAULT_ESCALATION = 0.03


def _sample(rows: list[Example], n: int, seed: int) -> list[Example]:
    """Up to ``n`` examples, at most half of them harmful where the split allows, in random order."""
    out = half_harmful(rows, n, seed)
    random.Random(seed).shuffle(out)
    return out


def stage_metrics(rows: list[Example], scores: dict[str, list[float]], thresholds: dict[str, float],
                  escalated: list[bool] | None = None) -> dict[str, Any]:
    """AUROC, TPR at 0.1% and 1% FPR (over all harmless rows), and rates at each system's calibrated threshold."""
    from ccguard.evaluate.metrics import auroc, tpr_at_fpr
    from ccguard.policy import flagged_rate

    y = np.array([r.label == "harmful" for r in rows], dtype=int)
    every = np.array([is_everyday(r) for r in rows])
    out: dict[str, Any] = {"n": len(rows), "n_harmful": int(y.sum()), "n_everyday": int(every.sum())}
    for name, s in scores.items():
        a = np.asarray(s, dtype=float)
        t = thresholds[name]
        out[name] = {
            "auroc": auroc(y, a), "tpr_at_0.1pct_fpr": tpr_at_fpr(y, a, 0.001), "tpr_at_1pct_fpr": tpr_at_fpr(y, a, 0.01),
            "tpr": flagged_rate(a[y == 1].tolist(), t).model_dump(), "fpr": flagged_rate(a[y == 0].tolist(), t).model_dump(),
            "everyday_fpr": flagged_rate(a[every].tolist(), t).model_dump(),
        }
    if escalated is not None:
        e = np.array(escalated, dtype=float)
        out["escalation"] = {"everyday": float(e[every].mean()) if every.any() else None,
                             "harmless": float(e[y == 0].mean()) if (y == 0).any() else None,
                             "harmful": float(e[y == 1].mean()) if y.any() else None, "all": float(e.mean())}
    return out


def train_cascade(guard_dir: Path, data_dir: Path, spec: CascadeSpec, *, n_train: int = 3000,
                  escalation: float = DEFAULT_ESCALATION, seed: int = 0, console: Any = None,
                  fingerprint: str | None = None, classifier: Path | None = None) -> dict[str, Any]:
    """Fit stage 2 (or, for ``spec.kind == 'classifier'``, take the trained input classifier in ``classifier``),
    calibrate the cascade and write both into ``guard_dir``. Returns what it wrote under ``stages.cascade`` (with
    ``fingerprint``, by which a pipeline re-run knows it is current)."""
    from tqdm import tqdm

    from ccguard import Guard

    if not 0.0 < escalation < 1.0:
        raise CcguardError(f"must be in (0, 1), not {escalation}", where="escalation")
    for name in ("train.jsonl", "val.jsonl", "test.jsonl"):
        if not (data_dir / name).is_file():
            raise CcguardError(f"{name} missing (the data directory of a `ccguard run`)", where=str(data_dir))
    guard = Guard.load(guard_dir, cascade=False)
    cfg = guard.manifest.config
    target_fpr = guard.manifest.input.calibration.target_fpr
    if escalation <= target_fpr:
        raise CcguardError(f"must be above the guard's target FPR ({target_fpr:g}): stage 2 can only clear what is "
                           f"escalated, so escalating less than stage 1 flags leaves it nothing to do, not {escalation:g}",
                           where="escalation")
    family_fpr, hard_fpr = cfg.get("family_fpr"), cfg.get("hard_fpr")
    splits = {
        "train": _sample(read_examples(data_dir / "train.jsonl"), n_train, seed),
        "val": read_examples(data_dir / "val.jsonl"),
        "calib": read_examples(data_dir / "calib.jsonl") if (data_dir / "calib.jsonl").is_file() else [],
        "test": read_examples(data_dir / "test.jsonl"),
    }
    if len({r.label for r in splits["train"]}) < 2 or len({r.label for r in splits["val"]}) < 2:
        raise CcguardError("the cascade needs harmful and harmless prompts in train and val", where=str(data_dir))
    if spec.kind == "classifier":
        from ccguard.cascade import load_input_classifier

        if classifier is None:
            raise CcguardError("a classifier stage needs a trained input classifier directory", where="classifier")
        stage2: Stage2 | ClassifierStage2 = ClassifierStage2(spec, load_input_classifier(Path(classifier)))
    else:
        stage2 = Stage2(spec)
    t0 = time.perf_counter()
    screens = {k: screened(guard, [r.prompt for r in v]) for k, v in splits.items()
               if k != "train" or isinstance(stage2, Stage2)}  # a classifier stage needs no training features
    base = Policy(input_threshold=guard.policy.input_threshold, history_margin=guard.policy.history_margin)
    stage1 = {k: [max(base.input_part_score(s, h) for s, h, _ in parts) for parts in v] for k, v in screens.items()}
    every = [s for r, s in zip(splits["val"] + splits["calib"], stage1["val"] + stage1["calib"], strict=True) if is_everyday(r)]
    t_esc = min(guard.policy.input_threshold, threshold_at_fpr(every, escalation) if every else guard.policy.input_threshold)
    esc = base.model_copy(update={"escalate_threshold": t_esc, "cascade_weight": 0.5, "cascade_threshold": 0.5})

    # Stage 2 reads what it will read in service: the text of each training prompt that stage 1 scores highest, and
    # on the other splits only the escalated texts (the rest never reach it). A classifier stage is trained already.
    todo: dict[str, list[str]] = {}
    if isinstance(stage2, Stage2):
        todo["train"] = [max(parts, key=lambda x: x[0])[2] for parts in screens["train"]]
    for k in ("val", "calib", "test"):
        todo[k] = [t for parts in screens[k] for s, h, t in parts if esc.escalates(base.input_part_score(s, h))]
    probs: dict[str, np.ndarray] = {}
    if isinstance(stage2, Stage2):
        with tqdm(total=sum(map(len, todo.values())), desc="stage-2 features",
                  disable=None if console is not None else True, leave=False) as bar:
            feats = {k: stage2.features(v, progress=bar.update) for k, v in todo.items()}
        y_train = np.array([int(r.label == "harmful") for r in splits["train"]])
        stage2.head = LinearHead.fit(feats["train"], y_train, spec.c)
        for k in ("val", "calib", "test"):
            probs[k] = 1.0 / (1.0 + np.exp(-stage2.head.logits(feats[k]))) if len(feats[k]) else np.zeros(0)
    else:
        probs = {k: stage2.scores(todo[k]) for k in ("val", "calib", "test")}
    feature_s = time.perf_counter() - t0
    parts = {}
    for k in ("val", "calib", "test"):
        s2 = iter(probs[k])
        parts[k] = [[PartScores(s, float(next(s2)) if esc.escalates(base.input_part_score(s, h)) else None, h)
                     for s, h, _ in ps] for ps in screens[k]]

    def calibrated(scores_val: list[float], scores_calib: list[float]) -> Calibration:
        return calibrate_input(splits["val"], scores_val, splits["calib"], scores_calib, target_fpr=target_fpr,
                               family_fpr=family_fpr, hard_fpr=hard_fpr)

    def ensemble_max(ps: list[PartScores], w: float) -> float:
        """The highest escalated ensemble score of a prompt, in ensemble space (0 when nothing escalates)."""
        return max((base.input_part_score(ensemble(p.stage1, p.stage2, w), p.history) for p in ps
                    if p.stage2 is not None), default=0.0)

    best: tuple[float, Calibration] | None = None
    for w in sorted({round(x, 3) for x in np.linspace(0.0, spec.weight, 5)} - {0.0}):
        cal = calibrated([ensemble_max(p, w) for p in parts["val"]], [ensemble_max(p, w) for p in parts["calib"]])
        if best is None or (cal.tpr.rate or 0.0) > (best[1].tpr.rate or 0.0) + 1e-9:
            best = (w, cal)
    assert best is not None
    weight, cal = best
    spec = spec.model_copy(update={"weight": weight})
    stage2.spec = spec
    policy = esc.model_copy(update={"cascade_weight": weight, "cascade_threshold": cal.threshold})
    thresholds = {"stage1": guard.policy.input_threshold, "cascade": guard.policy.input_threshold}
    report: dict[str, Any] = {}
    for split in ("val", "test"):
        dec = [cascade_decision(p, policy) for p in parts[split]]
        report[split] = stage_metrics(splits[split], {"stage1": stage1[split], "cascade": [d[0] for d in dec]},
                                      thresholds, [d[1] for d in dec])
    stage = {
        "path": CASCADE_DIR, "kind": spec.kind, "backbone": spec.backbone,
        "layers": list(spec.layers) if isinstance(stage2, Stage2) else [], "weight": weight,
        **({"precision": stage2.classifier.precision} if isinstance(stage2, ClassifierStage2) else {}),
        "escalation_target": escalation, "escalate_threshold": t_esc, "threshold": cal.threshold,
        "calibration": cal.model_dump(mode="json"),
        "metrics": report | {"feature_seconds": round(feature_s, 1), "n_train": len(splits["train"]) if isinstance(stage2, Stage2) else 0,
                             "n_stage2_texts": {k: len(v) for k, v in todo.items()}},
        **({"fingerprint": fingerprint} if fingerprint else {}),
    }
    # guard.json first drops any earlier stage, then the new files are written, then guard.json names them: a crash in
    # between leaves a guard without a cascade, never a new head under old thresholds.
    manifest = json.loads((guard_dir / "guard.json").read_text(encoding="utf-8"))
    if manifest.setdefault("stages", {}).pop("cascade", None) is not None:
        atomic_write_text(guard_dir / "guard.json", json.dumps(manifest, indent=2))
    shutil.rmtree(guard_dir / CASCADE_DIR, ignore_errors=True)  # no files of another kind of stage left beside it
    stage2.save(guard_dir / CASCADE_DIR, {"calibration": stage["calibration"]})
    manifest["stages"]["cascade"] = stage
    atomic_write_text(guard_dir / "guard.json", json.dumps(manifest, indent=2))
    return stage


def print_stage(stage: dict[str, Any], console: Any) -> None:
    """One line per system on the test split, and the escalation rates."""
    t = stage["metrics"]["test"]
    for name in ("stage1", "cascade"):
        r = t[name]
        console.print(f"test {name:<8} AUROC {r['auroc']:.4f}  TPR@1%FPR {r['tpr_at_1pct_fpr']:.3f}  "
                      f"TPR@0.1%FPR {r['tpr_at_0.1pct_fpr']:.3f}  at threshold: TPR {r['tpr']['rate']:.3f} "
                      f"FPR {r['fpr']['rate']:.4f} (everyday {r['everyday_fpr']['rate']:.4f})", markup=False)
    e = t["escalation"]
    console.print(f"escalated: {100 * (e['everyday'] or 0):.1f}% of everyday, {100 * (e['harmless'] or 0):.1f}% of "
                  f"harmless, {100 * (e['harmful'] or 0):.1f}% of harmful test prompts (weight {stage['weight']}, "
                  f"stage 2 {stage['metrics']['feature_seconds']} s)", markup=False)
