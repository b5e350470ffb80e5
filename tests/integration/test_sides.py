"""The output side of a run in a second process (ccguard.sides): the guard it gives, and its errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console


def _guard_and_metrics(run_dir: Path) -> tuple[dict, dict]:
    return (json.loads((run_dir / "guard" / "guard.json").read_text()),
            json.loads((run_dir / "report" / "metrics.json").read_text()))


def test_the_output_side_beside_the_input_side_gives_the_serial_runs_guard(smoke_run: Path, tmp_path: Path):
    from ccguard.pipeline import run

    guard, metrics = _guard_and_metrics(smoke_run)
    # The session's smoke run (2 cores here) trained its output classifier in a second process.
    assert metrics["output_side"] == "second process"
    out = tmp_path / "cbrn"
    shutil.copytree(smoke_run / "data", out / "data")  # the same data; both classifiers train again, serially
    run("cbrn", out, "smoke", seed=0, console=Console(stderr=True, quiet=True), parallel=False)
    serial, serial_metrics = _guard_and_metrics(out)
    assert serial_metrics["output_side"] == "this process"
    for side in ("input", "output"):
        a, b = guard[side], serial[side]
        assert a["training"]["data"]["fingerprint"] == b["training"]["data"]["fingerprint"]
        assert a["training"]["data"]["steps"] == b["training"]["data"]["steps"]
        # Threads add a gradient's terms in another order: equal up to float rounding, not bit for bit.
        assert a["calibration"]["threshold"] == pytest.approx(b["calibration"]["threshold"], abs=1e-3)
    assert guard["config"]["stream"] == serial["config"]["stream"]
    assert metrics["test"]["auroc"] == pytest.approx(serial_metrics["test"]["auroc"], abs=1e-3)
    assert metrics["output"]["test"]["auroc"] == pytest.approx(serial_metrics["output"]["test"]["auroc"], abs=1e-3)
    assert {"train_output", "calibrate_output", "evaluate_output"} <= set(metrics["stage_seconds"])


def test_an_output_side_error_stops_the_run_with_its_message(smoke_run: Path, tmp_path: Path, monkeypatch):
    from ccguard import profiles
    from ccguard.errors import CcguardError
    from ccguard.pipeline import run

    smoke = profiles.PROFILES["smoke"]
    missing = tmp_path / "no-such-backbone"
    monkeypatch.setitem(profiles.PROFILES, "smoke_bad_output", replace(
        smoke, name="smoke_bad_output", output_train=replace(smoke.output_train, backbone=str(missing))))  # fmt: skip
    out = tmp_path / "cbrn"
    shutil.copytree(smoke_run / "data", out / "data")
    with pytest.raises(CcguardError, match=f"cannot load backbone '{missing}'"):
        run("cbrn", out, "smoke_bad_output", seed=0, console=Console(stderr=True, quiet=True))
    # The child's error stopped the input side too: nothing was written as a finished run.
    assert not (out / "run.json").exists() and not (out / "guard" / "guard.json").exists()


def test_the_job_crosses_to_the_child_as_json_unchanged(tmp_path: Path):
    from ccguard import constitution
    from ccguard.profiles import PROFILES
    from ccguard.sides import OutputSideJob

    job = OutputSideJob.for_run(constitution.load("cbrn"), PROFILES["default"], 7, tmp_path / "data", tmp_path / "guard",
                                "ab" * 32)
    job = replace(job, threads=1, grow_to=2, peer_done=tmp_path / "done")
    text = job.to_json()
    assert json.loads(text)["data_dir"] == str(tmp_path / "data") and OutputSideJob.from_json(text) == job
    assert job.args.seed == 7 and job.args.max_steps == PROFILES["default"].output_train.max_steps
    assert job.target_fpr == 0.02 and job.n_val == 2000  # the hard-neighbour cap; output_eval_max
