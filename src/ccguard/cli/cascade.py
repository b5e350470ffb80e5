"""``ccguard cascade``: add a second input stage to a guard and calibrate the cascade end to end (see
``ccguard.cascade``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def parse_layers(layers: str, where: str) -> tuple[int, ...]:
    from ccguard.errors import CcguardError

    try:
        return tuple(int(x) for x in layers.split(",") if x.strip())
    except ValueError:
        raise CcguardError(f"must be comma-separated integers, not {layers!r}", where=where) from None


def cascade(
    guard: Annotated[Path, typer.Option(help="Guard artifact directory (stage 2 is written into it).")],
    data: Annotated[Path | None, typer.Option(help="The run's data directory (default: <guard>/../data).")] = None,
    backbone: Annotated[str, typer.Option(help="Stage 2's decoder LLM: gemma3-270m (multilingual), smollm2, or a "
                                               "local path or hub name.")] = "gemma3-270m",
    layers: Annotated[str, typer.Option(help="Comma-separated 1-based decoder layers read (the model runs up to the "
                                             "deepest).")] = "4,8",
    escalation: Annotated[float, typer.Option(min=0.001, max=0.5, help="Share of everyday traffic escalated to stage 2.")] = 0.03,
    weight: Annotated[float, typer.Option(min=0.05, max=1.0, help="Largest weight of stage 2 in the ensemble tried.")] = 1.0,
    n_train: Annotated[int, typer.Option(min=20, help="Training prompts for stage 2's head (half harmful).")] = 3000,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    classifier: Annotated[Path | None, typer.Option(help="Use this trained input classifier as stage 2 instead of a "
                                                        "decoder (another run's guard/input directory, e.g. from "
                                                        "`ccguard run --profile multilingual`); --backbone and "
                                                        "--layers are then ignored.")] = None,
) -> None:
    """Fit stage 2 on the guard's training prompts, set the escalation threshold on everyday traffic, calibrate the
    cascade at the guard's target FPR, and add it to the guard as a stage; prints each stage alone and the cascade on
    the test split."""
    import json

    from rich.console import Console

    from ccguard.cascade import CascadeSpec, check_input_classifier_dir
    from ccguard.errors import CcguardError
    from ccguard.guard import read_manifest
    from ccguard.train.cascade import print_stage, train_cascade

    read_manifest(guard)
    if classifier is not None:
        if classifier.resolve() == (guard / "cascade").resolve():
            raise CcguardError("is this guard's own stage 2; pass the directory it was copied from", where="--classifier")
        check_input_classifier_dir(classifier)  # a clear error now; train_cascade loads it
        try:  # the backbone it was trained from, as its training record names it
            backbone = str(json.loads((classifier / "training.json").read_text(encoding="utf-8"))["args"]["backbone"])
        except (OSError, ValueError, KeyError, TypeError):
            backbone = "input classifier"
        spec = CascadeSpec(kind="classifier", backbone=backbone, weight=weight)
    else:
        spec = CascadeSpec(backbone=backbone, layers=parse_layers(layers, "--layers"), weight=weight)
    console = Console(stderr=True)
    stage = train_cascade(guard, data or guard.parent / "data", spec, n_train=n_train, escalation=escalation,
                          seed=seed, console=console, classifier=classifier)
    print_stage(stage, console)
    console.print(f"cascade written to {guard / 'cascade'}")
