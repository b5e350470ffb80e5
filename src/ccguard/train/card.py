"""Model cards written beside the weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ccguard.records import atomic_write_text


def write_card(out_dir: Path, *, title: str, args: dict[str, Any], data: dict[str, Any], metrics: dict[str, Any]) -> None:
    """README.md (a ``huggingface_hub.ModelCard``: YAML metadata, then the human part) and training.json (machine)
    with args, data provenance and metrics."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = ModelCardData(library_name="ccguard", tags=["ccguard", "guardrail"], pipeline_tag="text-classification",
                         base_model=args.get("backbone") if "/" in str(args.get("backbone", "")) else None)
    body = [
        f"# {title}",
        "",
        "Trained by ccguard. Weights are safetensors; nothing here is pickled.",
        "",
        "## Training arguments",
        "```json",
        json.dumps(args, indent=2),
        "```",
        "",
        "## Data",
        "```json",
        json.dumps(data, indent=2),
        "```",
        "",
        "## Metrics",
        "```json",
        json.dumps(metrics, indent=2),
        "```",
        "",
    ]
    atomic_write_text(Path(out_dir) / "README.md", str(ModelCard("---\n" + meta.to_yaml() + "\n---\n\n" + "\n".join(body))))
    atomic_write_text(
        Path(out_dir) / "training.json", json.dumps({"args": args, "data": data, "metrics": metrics}, indent=2)
    )
