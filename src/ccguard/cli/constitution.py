"""``ccguard constitution``: validate and inspect constitutions."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Validate and inspect constitutions.", no_args_is_help=True)


@app.command("validate")
def validate(path: Annotated[str, typer.Argument(help="Path to a constitution YAML, or a bundled name.")]) -> None:
    """Report every problem in a constitution, each with its location."""
    from ccguard.constitution import load, resolve, validation_problems

    problems = validation_problems(resolve(path))
    if problems:
        for p in problems:
            typer.secho(p, fg=typer.colors.RED, err=True)
        typer.secho(f"{len(problems)} problem(s)", err=True)
        raise typer.Exit(1)
    c = load(path)
    n_q = sum(len(cat.seeds.queries) for cat in c.categories)
    typer.echo(
        f"ok: {c.name} v{c.version}, {len(c.harmful)} harmful and {len(c.harmless)} harmless categories, "
        f"{n_q} seed queries, sha256 {c.content_hash[:16]}"
    )


@app.command("list")
def list_() -> None:
    """List the bundled constitutions."""
    from ccguard.constitution import bundled_names

    for name in bundled_names():
        typer.echo(name)
