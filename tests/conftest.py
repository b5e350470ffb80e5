"""Shared fixtures. The smoke pipeline runs once per session on the real MiniLM (truncated) and real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEV_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete `ccguard run --profile smoke` into a temporary directory."""
    from rich.console import Console

    from ccguard.pipeline import run

    out = tmp_path_factory.mktemp("smoke") / "cbrn"
    run("cbrn", out, "smoke", seed=0, console=Console(stderr=True, quiet=True))
    return out


@pytest.fixture(scope="session")
def smoke_guard(smoke_run: Path):
    from ccguard import Guard

    return Guard.load(smoke_run / "guard")
