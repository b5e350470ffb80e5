"""``ccguard run``: constitution -> data -> trained, calibrated guard -> report.

Each stage writes its own files atomically and records a fingerprint of its inputs; a re-run skips stages whose
fingerprint matches, so a crashed run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from ccguard import constitution as constitution_mod
from ccguard.constitution import Constitution
from ccguard.guard import FORMAT_VERSION, ClassifierInfo, GuardManifest
from ccguard.profiles import PROFILES, Profile
from ccguard.records import Example, atomic_write_text, read_examples, render_prompt
from ccguard.synth.build import _llm_stage, _read_json, _sha, build_data, versions


def _progress_bar(desc: str, disable: bool = False, position: int | None = None):
    from tqdm.auto import tqdm

    bar = tqdm(total=1, desc=desc, unit="step", dynamic_ncols=True, disable=disable, position=position)

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.n = step
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.refresh()

    return bar, progress


def _training_fingerprint(kind: str, const: Constitution, args: Any, train_sha: str, init: str | None = None) -> str:
    """``init``: the fingerprint of the classifier whose weights training starts from (OutputTrainArgs.init_from_input)."""
    # How a trained classifier scores (paragraph windows) does not change its weights: not part of the fingerprint.
    a = {k: v for k, v in args.to_dict().items() if k != "paragraph_windows"}
    d = {"data": train_sha, "args": a, "categories": [c.id for c in const.harmful], "kind": kind}
    if init is not None:
        d["init"] = init
    if args.debias > 0:  # the style weights also depend on the words the audit masks, and on how they are fitted
        from ccguard.evaluate.shortcut import topic_vocabulary
        from ccguard.train import debias

        d["debias"] = {"vocab": _sha(sorted(topic_vocabulary(const))), "folds": debias.FOLDS, "floor": debias.FLOOR}
    return _sha(d)


def train_stage(
    kind: str, const: Constitution, args: Any, train_file: Path, train_sha: str, guard_dir: Path, console: Console,
    state: Any = None, init: tuple[Path, str] | None = None, on_step: Callable[[], None] | None = None,
    bar_position: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train the ``kind`` ('input' or 'output') classifier unless an identical one is already saved. Under
    ``accelerate launch``, every process (``state``, an accelerate ``PartialState``) trains its shard and only the
    main process writes. ``init`` (output only): the input classifier's directory and training fingerprint, to start
    from its encoder. ``on_step`` runs after every optimiser step, on the training thread; ``bar_position`` is the
    progress bar's line."""
    from ccguard.train.card import write_card
    from ccguard.train.debias import training_weights

    if kind == "input":
        from ccguard.classifiers.input import InputClassifier as Cls
        from ccguard.train.input import train_input

        harmful = [c.id for c in const.harmful]

        def fit(train, progress, weights):
            return train_input(train, harmful, args, progress=progress, weights=weights)
    else:
        from ccguard.classifiers.output import OutputClassifier as Cls
        from ccguard.train.output import train_output

        def fit(train, progress, weights):
            return train_output(train, args, progress=progress, weights=weights,
                                init_encoder=None if init is None else init[0])

    fingerprint = _training_fingerprint(kind, const, args, train_sha, None if init is None else init[1])
    out_dir = guard_dir / kind
    old = _read_json(out_dir / "training.json")
    if old and old.get("data", {}).get("fingerprint") == fingerprint and (out_dir / "model.safetensors").is_file():
        console.print(f"[dim]{kind} classifier: up to date, skipping training[/]")
        clf = Cls.load(out_dir)
        if kind == "output" and clf.spec.paragraph_windows != args.paragraph_windows:
            clf.set_paragraph_windows(args.paragraph_windows, out_dir)
        return clf, {**old, "args": args.to_dict()}
    main = state is None or state.is_main_process
    train = read_examples(train_file)
    weights, debias = training_weights(train, const, kind, args)
    if debias is not None and main:
        if debias["applied"]:
            console.print(f"{kind} classifier: style-debiased weights (strength {args.debias:g}): style-only AUROC "
                          f"{debias['style_auroc_oof']} out of fold, {debias['style_auroc_weighted']} as weighted; "
                          f"{debias['effective_rows']:.0%} effective rows", markup=False)
        else:
            console.print(f"{kind} classifier: debias {args.debias:g} not applied: the training data has one label or "
                          "fewer groups than folds", markup=False)
    bar, progress = _progress_bar(f"train {kind} classifier", disable=not main, position=bar_position)
    if on_step is not None:
        bar_progress = progress

        def progress(step: int, total: int, loss: float) -> None:
            on_step()
            bar_progress(step, total, loss)

    clf, stats = fit(train, progress, weights)
    if debias is not None:
        stats = {**stats, "debias": debias}
    bar.close()
    if not main:
        state.wait_for_everyone()
        return clf, {"args": args.to_dict(), "data": {"fingerprint": fingerprint, **stats}}
    tmp = guard_dir / f"{kind}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    clf.save(tmp)
    data_info = {"fingerprint": fingerprint, "train_sha256": train_sha, **stats}
    write_card(tmp, title=f"ccguard {kind} classifier ({const.name})", args=args.to_dict(), data=data_info, metrics={})
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    if state is not None:
        state.wait_for_everyone()
    console.print(f"{kind} classifier: {stats['steps']} steps in {stats['seconds']}s")
    return clf, {"args": args.to_dict(), "data": data_info}


@contextlib.contextmanager
def _timed(stages: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall time of a pipeline stage in ``stages`` (reported as metrics['stage_seconds'])."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = round(time.perf_counter() - t0, 1)


def _subsample(rows: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or len(rows) <= n:
        return rows
    return random.Random(seed).sample(rows, n)


def _calibrate_input_side(
    profile: Profile, data_dir: Path, clf: Any, seed: int, console: Console, stages: dict[str, float],
    shortcut: dict[str, Any], between: Callable[[], None] | None = None,
) -> tuple[Any, dict[str, Any], Any]:
    """Calibrate the input classifier on the validation split and evaluate it on the test split: the calibration, the
    run's metrics, and the scored validation rows (for the plot). ``between`` runs between the two. The output side
    is :mod:`ccguard.sides`."""
    from ccguard.evaluate.report import evaluate_input
    from ccguard.policy import calibrate_input

    n_eval = profile.eval_max_examples
    val = _subsample(read_examples(data_dir / "val.jsonl"), n_eval and 2 * n_eval, seed)
    test = _subsample(read_examples(data_dir / "test.jsonl"), profile.test_max_examples or n_eval, seed)
    calib = _subsample(read_examples(data_dir / "calib.jsonl"), n_eval and 2 * n_eval, seed)
    console.print(f"calibrating the input classifier on {len(val)} validation examples and {len(calib)} extra benign variants ...")
    with _timed(stages, "calibrate_input"):
        val_scores = [s.score for s in clf.score([render_prompt(e.prompt) for e in val])]
        calib_scores = [s.score for s in clf.score([render_prompt(e.prompt) for e in calib])]
        cal = calibrate_input(val, val_scores, calib, calib_scores, target_fpr=profile.target_fpr,
                              family_fpr=profile.family_fpr, hard_fpr=profile.hard_fpr)
    console.print(
        f"input threshold {cal.threshold:.4f} (set by {cal.binding}): val FPR {cal.fpr.fmt()}"
        + (f" everyday, {cal.hard.fmt()} hard neighbours" if cal.hard else "") + f"; val TPR {cal.tpr.fmt()}"
        + (f"; intent-pair harmless sides flagged {cal.contrast.fmt()} (not bound)" if cal.contrast else "")
    )
    if between is not None:
        between()
    console.print(f"evaluating the input classifier on {len(test)} test examples ...")
    with _timed(stages, "evaluate_input"):
        metrics = evaluate_input(clf, val, val_scores, test, cal.threshold)
    metrics["calibration"] = cal.model_dump()
    metrics["shortcut_audit"] = shortcut
    return cal, metrics, (val, val_scores, calib, calib_scores)


RUN_STATE = "run.json"  # written last by a finished run: what it was run on


def _stage1_profile(profile: Profile) -> Profile:
    """``profile`` without the input cascade's settings: what stage 1's calibration and evaluation depend on."""
    return replace(profile, name="", cascade=None, cascade_train=0, cascade_escalation=0.0, cascade_classifier=None)


def _stage1_metrics(run_dir: Path, stage1_fp: str) -> dict[str, Any] | None:
    """The metrics of a finished run whose stage 1 had this fingerprint, without its cascade and timings; None when
    there is none (or its guard and report are gone)."""
    done = _read_json(run_dir / RUN_STATE)
    if not done or done.get("stage1") != stage1_fp or not (run_dir / "guard" / "guard.json").is_file():
        return None
    metrics = _read_json(run_dir / "report" / "metrics.json")
    if not metrics or not {"calibration", "output", "shortcut_audit", "test", "val"} <= set(metrics):
        return None
    return {k: v for k, v in metrics.items() if k not in ("cascade", "stage_seconds", "run_seconds")}


def _run_is_current(run_dir: Path, fingerprint: str, profile: Profile) -> bool:
    """Whether a run with this fingerprint finished in ``run_dir`` and its guard and report are still there."""
    done = _read_json(run_dir / RUN_STATE)
    guard = _read_json(run_dir / "guard" / "guard.json")
    if not done or done.get("fingerprint") != fingerprint or guard is None:
        return False
    files = [run_dir / "report" / "report.md", run_dir / "guard" / "input" / "model.safetensors",
             run_dir / "guard" / "output" / "model.safetensors"]
    if profile.cascade is not None and "cascade" not in (guard.get("stages") or {}):
        return False
    return all(f.is_file() for f in files)


def run(
    constitution: str = "cbrn",
    out: Path | None = None,
    profile_name: str = "default",
    seed: int = 0,
    console: Console | None = None,
    client: Any = None,
    llm_cfg: Any = None,
    target_fpr: float | None = None,
    hard_fpr: float | None = None,
    conversations: float | None = None,
    parallel: bool = True,
) -> Path:
    """Run the whole pipeline; returns the run directory. ``client`` (an LLMClient) adds LLM stage I data and LLM
    transforms; without one the run is offline. ``target_fpr`` (on everyday traffic) and ``hard_fpr`` (the cap on hard
    neighbours) override the profile's; they are not part of any stage's
    fingerprint, so a re-run with another value only recalibrates and re-evaluates. ``conversations`` overrides the
    profile's rate of multi-turn training variants (it is part of the data's fingerprint). ``parallel``: on a CPU-only
    machine with two or more cores, train and calibrate the output classifier in a second process beside the input
    side (the scores then match a serial run's up to float rounding, not bit for bit)."""
    from ccguard.classifiers.backbone import torch_setup
    from ccguard.evaluate.report import write_report
    from ccguard.policy import Calibration
    from ccguard.train.loop import process_state

    # Under `accelerate launch`, every process trains its shard; only the main one writes, calibrates and reports.
    state = process_state()
    console = console or Console(stderr=True)
    if not state.is_main_process:
        console = Console(stderr=True, quiet=True)
    if profile_name not in PROFILES:
        from ccguard.errors import CcguardError

        raise CcguardError(f"unknown profile {profile_name!r} (choose from {', '.join(PROFILES)})")
    profile = PROFILES[profile_name]
    if target_fpr is not None:
        # The per-family bound is meant to be looser than the overall target; it never undercuts it.
        family = None if profile.family_fpr is None else max(profile.family_fpr, target_fpr)
        profile = replace(profile, target_fpr=target_fpr, family_fpr=family)
    if hard_fpr is not None:
        profile = replace(profile, hard_fpr=hard_fpr)
    if conversations is not None:
        profile = replace(profile, conversations=replace(profile.conversations, rate=conversations))
    ins, outs = profile.input_train, profile.output_train
    if outs.init_from_input and (ins.backbone, ins.num_layers) != (outs.backbone, outs.num_layers):
        from ccguard.errors import CcguardError

        raise CcguardError(f"output_train.init_from_input needs the same backbone and num_layers on both sides (input "
                           f"{ins.backbone!r}, {ins.num_layers}; output {outs.backbone!r}, {outs.num_layers})",
                           where=f"profile {profile.name!r}")  # fmt: skip
    if profile.hard_fpr is not None and profile.hard_fpr < profile.target_fpr:
        # Hard neighbours are never held to a stricter rate than everyday traffic.
        profile = replace(profile, hard_fpr=profile.target_fpr)
    const = constitution_mod.load(constitution)
    run_dir = Path(out) if out else Path("runs") / const.name
    data_dir, guard_dir, report_dir = run_dir / "data", run_dir / "guard", run_dir / "report"
    t_start = time.perf_counter()
    console.print(f"[bold]ccguard run[/]: constitution {const.name} ({const.content_hash[:12]}), profile {profile.name} -> {run_dir}")
    torch_setup()

    llm_dir = None
    llm_manifest = None
    if client is not None:
        from ccguard.synth.llm import LLMSynthConfig

        llm_dir = run_dir / "llm"
        with state.main_process_first():  # the others then find it up to date
            llm_manifest = _llm_stage(const, client, llm_cfg or LLMSynthConfig(seed=seed), llm_dir, console)
    stages: dict[str, float] = {}
    with _timed(stages, "data"), state.main_process_first():
        data_manifest = build_data(const, profile, data_dir, console, seed, client, llm_dir)
    sha = data_manifest["sha256"]
    # Nothing changed since a finished run (data, training, profile, calibration targets, seed, library versions):
    # there is nothing to retrain, recalibrate or re-evaluate, and the guard and report on disk are current.
    fp_parts = {
        "data": sha, "constitution": const.content_hash, "seed": seed, "versions": versions(),
        "input": _training_fingerprint("input", const, replace(profile.input_train, seed=seed), sha["train"]),
    }
    fp_parts["output"] = _training_fingerprint("output", const, replace(profile.output_train, seed=seed),
                                               sha["output_train"],
                                               fp_parts["input"] if profile.output_train.init_from_input else None)
    run_fp = _sha(fp_parts | {"profile": repr(profile)})
    if _run_is_current(run_dir, run_fp, profile):
        console.print(f"[dim]guard up to date (nothing changed since the last run): {guard_dir}; report in {report_dir}[/]")
        return run_dir
    # The same without the cascade's settings: adding a cascade to a finished run (or changing only its stage 2)
    # keeps stage 1's audit, calibration and evaluation, which the cascade is then calibrated on top of.
    stage1_fp = _sha(fp_parts | {"profile": repr(_stage1_profile(profile))})
    kept_metrics = _stage1_metrics(run_dir, stage1_fp)
    import torch

    from ccguard.sides import (
        OutputSideJob,
        OutputSideProcess,
        calibrate_output_side,
        can_run_beside,
        thread_cap,
        thread_grower,
        train_output_side,
    )

    threads = torch.get_num_threads()
    init = (guard_dir / "input", fp_parts["input"]) if profile.output_train.init_from_input else None
    job = OutputSideJob.for_run(const, profile, seed, data_dir, guard_dir, sha["output_train"], quiet=console.quiet)
    # On CPU cores, the output side (train, calibrate, evaluate) runs in a second process beside the input side:
    # more work per second than one process on every core (ccguard.sides, design/032).
    beside = parallel and state.num_processes == 1 and kept_metrics is None and init is None and can_run_beside(threads)
    with contextlib.ExitStack() as stack:
        child = None
        if beside:
            child = stack.enter_context(OutputSideProcess(replace(job, threads=threads // 2, grow_to=threads)))
            stack.enter_context(thread_cap(threads - threads // 2))
            console.print(f"the output classifier trains in a second process ({threads // 2} of {threads} threads "
                          "until the input side is done)")
        grow = None if child is None else thread_grower(child.done, threads)
        # Does the data give the label away by its style alone? Reported, never blocking.
        shortcut: dict[str, Any] = {}
        if kept_metrics is not None:
            shortcut = kept_metrics["shortcut_audit"]
        elif state.is_main_process:
            from ccguard.evaluate.shortcut import audit_data_dir

            with _timed(stages, "shortcut_audit"):
                shortcut_report = audit_data_dir(data_dir, const, seed=seed)
            for audit in (shortcut_report.input, shortcut_report.output):
                console.print(audit.summary(), markup=False)
            shortcut = shortcut_report.model_dump()
        with _timed(stages, "train_input"):
            clf, training = train_stage("input", const, replace(profile.input_train, seed=seed),
                                        data_dir / "train.jsonl", sha["train"], guard_dir, console, state, on_step=grow)
        if child is None:
            with _timed(stages, "train_output"):
                oclf, otraining = train_output_side(job, console, state=state, init=init)
        stage2_training = None
        if profile.cascade is not None and profile.cascade.kind == "classifier":
            # Stage 2 is a second input classifier (e.g. on a multilingual backbone) trained on the same data, by
            # every process like the others; it lives beside the guard until the cascade copies it in.
            with _timed(stages, "train_stage2"):
                _, stage2_training = train_stage(
                    "input", const, replace(profile.cascade_classifier or profile.input_train, seed=seed),
                    data_dir / "train.jsonl", sha["train"], run_dir / "stage2", console, state, on_step=grow)
        if not state.is_main_process:
            return run_dir

        if kept_metrics is not None:
            console.print("stage 1 up to date: its calibration and evaluation are kept")
            metrics = kept_metrics
            cal = Calibration.model_validate(metrics["calibration"])
            omet = metrics["output"]
            ocal = Calibration.model_validate(omet["calibration"])
            stream_spec = asdict(oclf.spec)
            scored = None
        else:
            if grow is not None:
                grow()
            cal, metrics, scored = _calibrate_input_side(profile, data_dir, clf, seed, console, stages, shortcut,
                                                         between=grow)
            if child is not None:
                side = child.result()
            else:
                side = calibrate_output_side(job, oclf, otraining, console, {})
            stages.update(side.stages)
            otraining, omet, stream_spec = side.training, side.metrics, side.spec
            ocal = Calibration.model_validate(side.calibration)
            metrics["output"] = omet
            metrics["output_side"] = "second process" if child is not None else "this process"
    # Style-debiased training (ccguard.train.debias): the audit's model as the training weights see it.
    weighted = {k: t["data"]["debias"] for k, t in (("input", training), ("output", otraining))
                if t["data"].get("debias", {}).get("applied")}
    if weighted and shortcut:
        shortcut = {**shortcut, "training_weights": weighted}
        if kept_metrics is None:
            metrics["shortcut_audit"] = shortcut

    manifest = GuardManifest(
        format_version=FORMAT_VERSION,
        constitution={"name": const.name, "version": const.version, "hash": const.content_hash},
        refusal=const.refusal,
        input=ClassifierInfo(path="input", backbone=training["args"]["backbone"], calibration=cal, training=training),
        output=ClassifierInfo(path="output", backbone=otraining["args"]["backbone"], calibration=ocal, training=otraining),
        data={"sha256": sha, "counts": data_manifest["counts"], "seed": seed,
              "llm": None if llm_manifest is None else {k: llm_manifest[k] for k in ("backend", "usage", "queries", "responses")}},
        config={"profile": profile.name, "target_fpr": profile.target_fpr, "family_fpr": profile.family_fpr, "hard_fpr": profile.hard_fpr, "window": asdict(clf.spec), "stream": stream_spec,
                "input_precision": clf.precision},
        metrics={"input": {k: metrics[k] for k in ("test", "val")}, "output": {k: omet[k] for k in ("test", "test_answers", "refusals_flagged", "val", "stop")},
                 "shortcut_audit": shortcut},
        versions=versions(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    cascade_fp = stage2_dir = None
    if profile.cascade is not None:
        stage2_fp = None
        if stage2_training is not None:
            stage2_dir, stage2_fp = run_dir / "stage2" / "input", stage2_training["data"]["fingerprint"]
        # 'kind' joined the spec later: a decoder stage hashes as before, so existing cascades stay current.
        spec_dump = profile.cascade.model_dump(mode="json", exclude={"kind"} if profile.cascade.kind == "decoder" else None)
        cascade_fp = _sha({"spec": spec_dump, "n": profile.cascade_train, "seed": seed,
                           "escalation": profile.cascade_escalation, "data": sha, "input": training["data"]["fingerprint"],
                           "fpr": [profile.target_fpr, profile.hard_fpr, profile.family_fpr],
                           "stage1": [cal.threshold, clf.precision]} | ({"stage2": stage2_fp} if stage2_fp else {}))
        old = _read_json(guard_dir / "guard.json") or {}
        kept = (old.get("stages") or {}).get("cascade")
        folder = guard_dir / str((kept or {}).get("path") or "-")
        weights = "model.safetensors" if profile.cascade.kind == "classifier" else "head.safetensors"
        if kept and kept.get("fingerprint") == cascade_fp and all((folder / f).is_file() for f in (weights, "cascade.json")):
            manifest.stages["cascade"] = kept  # the same stage 2 from a crashed or repeated run
    # The policy travels with the guard, so `ccguard eval` and users can see exactly what it was trained on.
    atomic_write_text(guard_dir / "constitution.yaml", constitution_mod.resolve(constitution).read_text(encoding="utf-8"))
    atomic_write_text(guard_dir / "guard.json", manifest.model_dump_json(indent=2))
    if profile.cascade is not None:
        from ccguard.train.cascade import print_stage, train_cascade

        if "cascade" not in manifest.stages:
            console.print(f"training the input cascade's stage 2 ({profile.cascade.backbone}) ...")
            with _timed(stages, "train_cascade"):
                manifest.stages["cascade"] = train_cascade(
                    guard_dir, data_dir, profile.cascade, n_train=profile.cascade_train,
                    escalation=profile.cascade_escalation, seed=seed, console=console, fingerprint=cascade_fp,
                    classifier=stage2_dir)
        print_stage(manifest.stages["cascade"], console)
        metrics["cascade"] = manifest.stages["cascade"]
    from ccguard.train.card import write_card

    for kind, info, met in (("input", training, metrics), ("output", otraining, omet)):
        card_metrics = {"calibration": met["calibration"], "test": met["test"], "val": met["val"]}
        write_card(guard_dir / kind, title=f"ccguard {kind} classifier ({const.name})", args=info["args"], data=info["data"], metrics=card_metrics)
    metrics["stage_seconds"] = stages
    metrics["run_seconds"] = round(time.perf_counter() - t_start, 1)
    images = {}
    tradeoff = report_dir / "input_tradeoff.png"
    if scored is None and tradeoff.is_file():
        images["Input threshold trade-off (logit axis)"] = tradeoff  # stage 1's, kept with its calibration
    elif cal.hard is not None and scored is not None:
        import numpy as np

        from ccguard.evaluate.plots import calibration_tradeoff
        from ccguard.policy import is_contrast, is_everyday

        val, val_scores, calib, calib_scores = scored
        pairs = list(zip(val, val_scores, strict=True)) + list(zip(calib, calib_scores, strict=True))
        rates = {
            "everyday FPR (val pool)": np.array([s for e, s in pairs if is_everyday(e)]),
            "hard-neighbour FPR (val)": np.array([s for e, s in pairs if e.label == "harmless" and not is_everyday(e)
                                                  and not is_contrast(e)]),
            "TPR (val harmful)": np.array([s for e, s in pairs if e.label == "harmful"]),
            "intent-pair harmless sides (val, not bound)": np.array([s for e, s in pairs if is_contrast(e)]),
        }
        report_dir.mkdir(parents=True, exist_ok=True)
        images["Input threshold trade-off (logit axis)"] = calibration_tradeoff(
            tradeoff, rates, cal.threshold, f"input classifier: binding {cal.binding}")
    write_report(report_dir, const, manifest, metrics, images)
    console.print(
        f"[bold green]done[/] in {metrics['run_seconds']:.0f}s: input test AUROC {metrics['test']['auroc']:.4f} "
        f"(TPR {metrics['test']['tpr']['rate']:.3f} at FPR {metrics['test']['fpr']['rate']:.3f}); output test AUROC "
        f"{omet['test']['auroc']:.4f} (TPR {omet['test']['tpr']['rate']:.3f} at FPR {omet['test_answers']['fpr']['rate']:.3f} "
        f"on answers, {omet['refusals_flagged']['rate'] or 0:.3f} of refusals halted); "
        f"report in {report_dir}"
    )
    console.print("stages: " + ", ".join(f"{k} {v:.0f}s" for k, v in stages.items()), markup=False)
    atomic_write_text(run_dir / RUN_STATE, json.dumps({"fingerprint": run_fp, "stage1": stage1_fp,
                                                          "finished": manifest.created}, indent=2))
    return run_dir
