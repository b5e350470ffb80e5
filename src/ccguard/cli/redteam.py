"""``ccguard redteam``: offline search-based red teaming, and retraining on what gets through."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def redteam(
    guard: Annotated[Path, typer.Option(help="Guard artifact directory (inside a run).")],
    out_guard: Annotated[Path | None, typer.Option(help="Where to write the retrained guard (default: <guard>-redteam).")] = None,
    queries: Annotated[int, typer.Option(help="Held-out harmful queries to attack.")] = 40,
    beam: Annotated[int, typer.Option(help="Beam width.")] = 3,
    depth: Annotated[int, typer.Option(help="Most transforms composed.")] = 2,
    proposals: Annotated[int, typer.Option(help="Transforms tried per beam element and depth.")] = 10,
    retrain_steps: Annotated[int, typer.Option(help="Training steps on train + evasions (0: search only).")] = 150,
    seed: Annotated[int, typer.Option(help="Search seed.")] = 0,
) -> None:
    """Beam-search transform compositions that evade the guard, retrain on half of them, measure on the rest."""
    from ccguard.guard import read_manifest
    from ccguard.redteam.loop import run_redteam
    from ccguard.redteam.search import SearchConfig

    read_manifest(guard)
    target = None if retrain_steps == 0 else (out_guard or guard.with_name(guard.name + "-redteam"))
    run_redteam(guard, target, n_queries=queries, cfg=SearchConfig(beam=beam, depth=depth, proposals=proposals, seed=seed),
                retrain_steps=retrain_steps)
