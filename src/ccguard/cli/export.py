"""``ccguard export``: a guard's classifiers as ONNX models for standard servers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export(
    guard: Annotated[str, typer.Option(help="Guard artifact directory, or a Hub repo id (hf://org/name).")],
    out: Annotated[Path, typer.Option(help="Directory to write: a new one, or an earlier export (replaced).")],
    opset: Annotated[int, typer.Option(min=14, help="ONNX opset.")] = 17,
) -> None:
    """Export both classifiers to ONNX (full precision, verified against the torch models before writing), with
    their tokenizers and export.json: how to build inputs and turn logits into decisions."""
    from ccguard.export import export_guard
    from ccguard.hub import resolve

    info = export_guard(resolve(guard), out, opset=opset)
    sides = ", ".join(f"{s} (max error {info[s]['max_err_vs_torch']:.1e})" for s in ("input", "output") if s in info)
    typer.echo(f"exported {sides} to {out}")
