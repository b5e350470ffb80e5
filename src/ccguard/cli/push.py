"""``ccguard push``: publish a guard with its model card to the Hub, or to a local hub folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def push(
    guard: Annotated[Path, typer.Option(help="Guard artifact directory (runs/<name>/guard).")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub repository, 'org/name'.")],
    local_hub: Annotated[Path | None, typer.Option(
        help="Write to this local hub folder (the Hub's cache layout) instead of the Hub; load it offline with "
        "Guard.from_pretrained('hf://org/name', cache_dir=FOLDER) or `ccguard serve --guard hf://org/name` with HF_HUB_CACHE=FOLDER.")] = None,
    private: Annotated[bool, typer.Option(help="Create the Hub repository as private.")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to push to (default main).")] = None,
    create_pr: Annotated[bool, typer.Option(help="Open a pull request instead of committing to the branch.")] = False,
) -> None:
    """Publish a guard: its weights (safetensors), guard.json, constitution and a model card with YAML metadata
    (constitution hash, thresholds, evaluation table, intended use, limits). The token comes from HF_TOKEN or
    `hf auth login`."""
    from ccguard.guard import read_manifest
    from ccguard.hub import push_to_hub

    manifest = read_manifest(guard)
    ref = push_to_hub(guard, manifest, repo_id, local_hub=local_hub, private=private or None, revision=revision,
                      create_pr=create_pr)
    where = f"local hub {local_hub}" if local_hub else "the Hub"
    typer.echo(f"pushed {guard} as {repo_id} to {where}: {ref}")
