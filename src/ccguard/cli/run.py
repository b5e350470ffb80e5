"""``ccguard run``: the whole pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run(
    constitution: Annotated[str, typer.Option(help="Bundled constitution name or path to a YAML file.")] = "cbrn",
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<constitution>).")] = None,
    profile: Annotated[str, typer.Option(help="smoke (about a minute), default (<= 15 min on 2 CPU cores) or full.")] = "default",
    seed: Annotated[int, typer.Option(help="Seed for data generation, splits and training.")] = 0,
) -> None:
    """Generate data, train and calibrate a guard, and write a report. Re-running resumes."""
    from ccguard.pipeline import run as run_pipeline

    run_pipeline(constitution, out, profile, seed)
