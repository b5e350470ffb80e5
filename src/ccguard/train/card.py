"""Model cards written beside the weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ccguard.records import atomic_write_text


def write_card(out_dir: Path, *, title: str, args: dict[str, Any], data: dict[str, Any], metrics: dict[str, Any]) -> None:
    """README.md (human) and training.json (machine) with args, data provenance and metrics."""
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
    atomic_write_text(Path(out_dir) / "README.md", "\n".join(body))
    atomic_write_text(
        Path(out_dir) / "training.json", json.dumps({"args": args, "data": data, "metrics": metrics}, indent=2)
    )
