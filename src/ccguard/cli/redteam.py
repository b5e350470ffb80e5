"""``ccguard redteam``: offline search-based red teaming, and retraining on what gets through."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ccguard.cli import llm_options as o


def redteam(
    guard: Annotated[Path, typer.Option(help="Guard artifact directory (inside a run).")],
    out_guard: Annotated[Path | None, typer.Option(help="Where to write the retrained guard (default: <guard>-redteam).")] = None,
    queries: Annotated[int, typer.Option(help="Held-out harmful queries to attack.")] = 40,
    beam: Annotated[int, typer.Option(help="Beam width.")] = 3,
    depth: Annotated[int, typer.Option(help="Most transforms composed.")] = 2,
    proposals: Annotated[int, typer.Option(help="Transforms tried per beam element and depth.")] = 10,
    retrain_steps: Annotated[int, typer.Option(help="Training steps on train + evasions (0: search only).")] = 150,
    seed: Annotated[int, typer.Option(help="Search seed.")] = 0,
    backend: o.Backend = None,
    model: o.Model = None,
    base_url: o.BaseUrl = None,
    api_key_env: o.ApiKeyEnv = None,
    llm_config: o.LLMConfigFile = None,
    no_cache: o.NoCache = False,
    llm_rounds: Annotated[int, typer.Option(min=1, max=20, help="With --backend: attack rounds per query.")] = 3,
    verify: Annotated[bool, typer.Option(help="With --backend: drop LLM attacks the attacker says lost the request.")] = True,
    from_arena: Annotated[Path | None, typer.Option(help="Retrain on the successful attacks in this arena database instead of searching (held-out half by attempt).")] = None,
) -> None:
    """Beam-search transform compositions that evade the guard (and, with --backend, let an LLM write attacks),
    retrain on half of the evasions, and measure the block rate on the other half."""
    from ccguard.guard import read_manifest
    from ccguard.redteam.llm_attack import AttackConfig
    from ccguard.redteam.loop import run_redteam
    from ccguard.redteam.search import SearchConfig

    read_manifest(guard)
    target = None if retrain_steps == 0 else (out_guard or guard.with_name(guard.name + "-redteam"))
    if from_arena is not None:
        from ccguard.arena.retrain import run_from_arena

        run_from_arena(from_arena, guard, target, retrain_steps=retrain_steps)
        return
    attacker = o.client_from_options(backend, model, base_url, api_key_env, None, llm_config, no_cache)
    attack_cfg = AttackConfig(rounds=llm_rounds, seed=seed, verify=verify)
    run_redteam(guard, target, n_queries=queries, cfg=SearchConfig(beam=beam, depth=depth, proposals=proposals, seed=seed),
                retrain_steps=retrain_steps, attacker=attacker, attack_cfg=attack_cfg)
