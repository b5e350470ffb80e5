"""``ccguard probe``: train a linear probe on a local upstream's hidden states and ensemble it with the guard's
streaming output classifier (see ``ccguard.probes``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def probe(
    guard: Annotated[Path, typer.Option(help="Guard artifact directory (the probe is written into it).")],
    data: Annotated[Path | None, typer.Option(help="The run's data directory (default: <guard>/../data).")] = None,
    upstream: Annotated[str, typer.Option(help="The local upstream the probe reads (name or path, as for serve --upstream local:MODEL).")] = "smollm2",
    layers: Annotated[str, typer.Option(help="Comma-separated 1-based decoder layers to read.")] = "16,24,30",
    window: Annotated[int, typer.Option(min=1, help="Tokens in the sliding mean of probe logits.")] = 16,
    weight: Annotated[float, typer.Option(min=0.0, max=1.0, help="Weight of the probe in the ensemble.")] = 0.5,
    n_train: Annotated[int, typer.Option(min=4, help="Training exchanges (half harmful).")] = 300,
    n_val: Annotated[int, typer.Option(min=4, help="Calibration exchanges.")] = 300,
    n_test: Annotated[int, typer.Option(min=4, help="Test exchanges for the report.")] = 300,
    max_tokens: Annotated[int, typer.Option(min=8, help="Response tokens read per exchange.")] = 256,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Teacher-force output exchanges through the upstream, fit the probe on its hidden states, calibrate the
    probe + output-classifier ensemble at the guard's output target FPR, and add it to the guard as a stage."""
    from rich.console import Console

    from ccguard.cli.cascade import parse_layers
    from ccguard.guard import read_manifest
    from ccguard.probes import ProbeSpec
    from ccguard.train.probe import train_probe

    read_manifest(guard)
    spec = ProbeSpec(upstream=upstream, layers=parse_layers(layers, "--layers"), window=window, weight=weight, max_tokens=max_tokens)
    console = Console(stderr=True)
    m = train_probe(guard, data or guard.parent / "data", spec, n_train=n_train, n_val=n_val, n_test=n_test,
                    seed=seed, console=console)
    t = m["test"]
    for name in ("classifier", "probe", "ensemble"):
        r = t[name]
        console.print(f"test {name:<10} AUROC {r['auroc']:.4f}  TPR@1%FPR {r['tpr_at_1pct_fpr']:.3f}  "
                      f"TPR@0.1%FPR {r['tpr_at_0.1pct_fpr']:.3f}  (n={t['n']})")
    console.print(f"probe written to {guard / 'probe'}; features took {m['feature_seconds']} s")
