"""Train a linear probe on a local upstream's hidden states and calibrate its ensemble with the output classifier.

Exchanges come from the run's output splits (``output_train.jsonl`` to fit, ``output_val.jsonl`` to calibrate,
``output_test.jsonl`` to report). Each is teacher-forced through the upstream once, with the hooks streaming uses.
The probe, the ensemble threshold and the metrics are written into the guard artifact (``probe/`` and the
``stages.probe`` entry of guard.json); the guard still loads and works without them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ccguard.errors import CcguardError
from ccguard.heads import LinearHead
from ccguard.probes import PROBE_DIR, ProbeModel, ProbeSpec, exchange_features, exchange_score
from ccguard.records import Example, atomic_write_text, half_harmful, read_examples, render_prompt

TOKENS_PER_EXCHANGE = 48  # token features kept per training exchange (the rest add little but memory)


def _sample(rows: list[Example], n: int, seed: int) -> list[Example]:
    """Up to ``n`` single-turn exchanges, half harmful where the split allows."""
    return half_harmful([r for r in rows if isinstance(r.prompt, str) and r.response], n, seed)


def _features(model: Any, tok: Any, rows: list[Example], spec: ProbeSpec, progress: Any) -> list[np.ndarray]:
    out = []
    for r in rows:
        out.append(exchange_features(model, tok, render_prompt(r.prompt), r.response or "", spec))
        progress()
    return out


def train_probe(guard_dir: Path, data_dir: Path, spec: ProbeSpec, *, n_train: int = 300, n_val: int = 300,
                n_test: int = 300, seed: int = 0, console: Any = None) -> dict[str, Any]:
    """Fit the probe, calibrate the ensemble and write both into ``guard_dir``. Returns the metrics."""
    from tqdm import tqdm

    from ccguard import Guard
    from ccguard.constitution import load as load_constitution
    from ccguard.evaluate.metrics import auroc, tpr_at_fpr
    from ccguard.llm.local import LocalBackend
    from ccguard.policy import calibrate_output, ensemble

    guard = Guard.load(guard_dir)
    if guard.output_classifier is None or guard.policy.output_threshold is None:
        raise CcguardError("a probe is ensembled with the output classifier; this guard has none", where=str(guard_dir))
    for name in ("output_train.jsonl", "output_val.jsonl", "output_test.jsonl"):
        if not (data_dir / name).is_file():
            raise CcguardError(f"{name} missing (the data directory of a `ccguard run`)", where=str(data_dir))
    splits = {
        "train": _sample(read_examples(data_dir / "output_train.jsonl"), n_train, seed),
        "val": _sample(read_examples(data_dir / "output_val.jsonl"), n_val, seed + 1),
        "test": _sample(read_examples(data_dir / "output_test.jsonl"), n_test, seed + 2),
    }
    if len({r.label for r in splits["train"]}) < 2 or len({r.label for r in splits["val"]}) < 2:
        raise CcguardError("the probe needs harmful and harmless exchanges in output_train and output_val", where=str(data_dir))
    model, tok = LocalBackend(spec.upstream)._load()
    t0 = time.perf_counter()
    total = sum(map(len, splits.values()))
    with tqdm(total=total, desc="probe features", disable=None if console is not None else True, leave=False) as bar:
        feats = {k: _features(model, tok, v, spec, lambda: bar.update(1)) for k, v in splits.items()}
    feature_s = time.perf_counter() - t0

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for f, r in zip(feats["train"], splits["train"], strict=True):
        if len(f):
            keep = rng.choice(len(f), size=min(len(f), TOKENS_PER_EXCHANGE), replace=False)
            xs.append(f[keep])
            ys.append(np.full(len(keep), int(r.label == "harmful")))
    x, y = np.concatenate(xs), np.concatenate(ys)
    head = LinearHead.fit(x, y, spec.c)
    probe = ProbeModel(spec, head.mean, head.scale, head.weight, head.bias)

    base: dict[str, tuple[list[float], list[float | None]]] = {}
    for split in ("val", "test"):
        rows = splits[split]
        clf = [s.score for s in guard.output_classifier.score([render_prompt(r.prompt) for r in rows],
                                                              [r.response or "" for r in rows])]
        base[split] = clf, [exchange_score(probe.logits(f).tolist(), spec.window) if len(f) else None for f in feats[split]]

    def scores(split: str, weight: float) -> dict[str, list[float]]:
        clf, prb = base[split]
        ens = [ensemble(c, p, weight) for c, p in zip(clf, prb, strict=True)]
        return {"classifier": clf, "probe": [0.0 if p is None else p for p in prb], "ensemble": ens}

    # The ensemble weight: the one with the highest validation TPR at the calibrated threshold, up to spec.weight
    # (ties go to the lighter probe).
    harmful_ids = {c.id for c in load_constitution(guard_dir / "constitution.yaml").harmful}
    target = guard.manifest.output.calibration.target_fpr
    best = None
    for w in sorted({round(x, 3) for x in np.linspace(0.0, spec.weight, 5)}):
        v = scores("val", w)
        cal = calibrate_output(splits["val"], v["ensemble"], harmful_categories=harmful_ids, target_fpr=target)
        if best is None or (cal.tpr.rate or 0.0) > (best[2].tpr.rate or 0.0) + 1e-9:
            best = (w, v, cal)
    weight, val, cal = best
    spec = spec.model_copy(update={"weight": weight})
    probe.spec = spec
    test = scores("test", weight)

    def report(split: str, s: dict[str, list[float]]) -> dict[str, Any]:
        labels = [int(r.label == "harmful") for r in splits[split]]
        return {name: {"auroc": auroc(labels, v), "tpr_at_1pct_fpr": tpr_at_fpr(labels, v, 0.01),
                       "tpr_at_0.1pct_fpr": tpr_at_fpr(labels, v, 0.001)} for name, v in s.items()} | {"n": len(labels)}

    metrics = {"val": report("val", val), "test": report("test", test), "feature_seconds": round(feature_s, 1),
               "n_train_exchanges": len(splits["train"]), "n_train_tokens": int(len(y))}
    probe.save(guard_dir / PROBE_DIR, {"calibration": cal.model_dump(mode="json"), "metrics": metrics})
    manifest = json.loads((guard_dir / "guard.json").read_text())
    manifest.setdefault("stages", {})["probe"] = {
        "path": PROBE_DIR, "upstream": spec.upstream, "layers": list(spec.layers), "window": spec.window,
        "weight": spec.weight, "ensemble_threshold": cal.threshold, "metrics": metrics,
    }
    atomic_write_text(guard_dir / "guard.json", json.dumps(manifest, indent=2))
    return metrics
