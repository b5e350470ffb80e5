"""Offline search-based red teaming on the smoke guard, with the retraining loop closed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def test_redteam_finds_evasions_keeps_lineage_and_retrains(smoke_run: Path, tmp_path: Path):
    from rich.console import Console

    from ccguard import Guard
    from ccguard.records import read_examples
    from ccguard.redteam.loop import run_redteam
    from ccguard.redteam.search import SearchConfig

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    out_guard = run / "guard-redteam"
    rep = run_redteam(run / "guard", out_guard, n_queries=8, cfg=SearchConfig(beam=2, depth=2, proposals=5),
                      retrain_steps=12, console=Console(quiet=True))
    before = rep["before"]
    assert before["search_train_half"]["queries"] + before["search_heldout_half"]["queries"] > 0
    evs = read_examples(run / "redteam" / "evasions_train.jsonl")
    for e in evs:
        assert e.label == "harmful" and e.source == "redteam" and e.parent_id and e.lineage
    if evs:
        assert (out_guard / "guard.json").is_file()
        g = Guard.load(out_guard)
        m = json.loads((out_guard / "guard.json").read_text())
        assert "redteam" in m["metrics"] and "redteam_retrain" in m["input"]["training"]
        assert g.check_input("hello").stage == "input"
        assert "block_rate_heldout_evasions" in rep["after"]
