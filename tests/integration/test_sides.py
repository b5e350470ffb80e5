"""The output side of a run in a second process (ccguard.sides): the guard it gives, and its errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console


def _beside_here() -> bool:
    import torch

    from ccguard.classifiers.backbone import torch_setup
    from ccguard.sides import can_run_beside

    torch_setup()
    return can_run_beside(torch.get_num_threads())


needs_two_cores = pytest.mark.skipif(not _beside_here(), reason="one thread or an accelerator: runs stay serial")


def _guard_and_metrics(run_dir: Path) -> tuple[dict, dict]:
    return (json.loads((run_dir / "guard" / "guard.json").read_text()),
            json.loads((run_dir / "report" / "metrics.json").read_text()))


@needs_two_cores
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
    # Under bf16 autocast (a CPU with AVX512-BF16) each product rounds to 8 significant bits, so one and two threads
    # part further over the steps: the small smoke test splits' AUROCs then agree to about a point, not to 1e-3, and
    # the thresholds to a few thousandths (0.7042 against 0.7055 for the input side in one bf16 sitting).
    bf16 = guard["config"]["input_precision"] != "no"
    for side in ("input", "output"):
        a, b = guard[side], serial[side]
        assert a["training"]["data"]["fingerprint"] == b["training"]["data"]["fingerprint"]
        assert a["training"]["data"]["steps"] == b["training"]["data"]["steps"]
        # Threads add a gradient's terms in another order: equal up to float rounding, not bit for bit.
        assert a["calibration"]["threshold"] == pytest.approx(b["calibration"]["threshold"], abs=1e-2 if bf16 else 1e-3)
    assert guard["config"]["stream"] == serial["config"]["stream"]
    tol = 2e-2 if bf16 else 1e-3
    assert metrics["test"]["auroc"] == pytest.approx(serial_metrics["test"]["auroc"], abs=tol)
    assert metrics["output"]["test"]["auroc"] == pytest.approx(serial_metrics["output"]["test"]["auroc"], abs=tol)
    assert {"train_output", "calibrate_output", "evaluate_output"} <= set(metrics["stage_seconds"])


@needs_two_cores
def test_an_output_side_error_stops_the_run_with_its_message(smoke_run: Path, tmp_path: Path, monkeypatch):
    import torch

    from ccguard import profiles
    from ccguard.errors import CcguardError
    from ccguard.pipeline import run

    smoke = profiles.PROFILES["smoke"]
    missing = tmp_path / "no-such-backbone"
    monkeypatch.setitem(profiles.PROFILES, "smoke_bad_output", replace(
        smoke, name="smoke_bad_output", output_train=replace(smoke.output_train, backbone=str(missing))))  # fmt: skip
    out = tmp_path / "cbrn"
    shutil.copytree(smoke_run / "data", out / "data")
    threads, cap = torch.get_num_threads(), os.environ.get("CCGUARD_THREADS")
    folders = set(Path(tempfile.gettempdir()).glob("ccguard-sides-*"))
    with pytest.raises(CcguardError, match=re.escape(f"cannot load backbone '{missing}'")):
        run("cbrn", out, "smoke_bad_output", seed=0, console=Console(stderr=True, quiet=True))
    # The child's error stopped the input side at its next step, before its classifier was saved.
    assert not (out / "guard" / "input").exists() and not (out / "run.json").exists()
    # This process has its threads back, and the child's folder is gone.
    assert (torch.get_num_threads(), os.environ.get("CCGUARD_THREADS")) == (threads, cap)
    assert set(Path(tempfile.gettempdir()).glob("ccguard-sides-*")) == folders


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


def test_threads_are_capped_grown_and_given_back(monkeypatch):
    import torch

    from ccguard.classifiers.backbone import torch_setup
    from ccguard.errors import CcguardError
    from ccguard.sides import thread_cap, thread_grower

    monkeypatch.delenv("CCGUARD_THREADS", raising=False)
    torch_setup()
    full = torch.get_num_threads()
    done = False
    with thread_cap(1):
        torch_setup()  # a training function calls it again: the cap holds
        assert torch.get_num_threads() == 1 and os.environ["CCGUARD_THREADS"] == "1"
        grow = thread_grower(lambda: done, 2)
        grow()
        assert torch.get_num_threads() == 1  # the other side is still working
        done = True
        grow()
        assert torch.get_num_threads() == 2 and os.environ["CCGUARD_THREADS"] == "2"
    assert torch.get_num_threads() == full and "CCGUARD_THREADS" not in os.environ
    monkeypatch.setenv("CCGUARD_THREADS", "two")
    with pytest.raises(CcguardError, match="CCGUARD_THREADS must be a whole number"):
        torch_setup()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the child's signal handler")
def test_a_killed_runs_child_exits_and_removes_the_runs_folder(smoke_run: Path, tmp_path: Path):
    """`kill -9` of a run: its output side's process gets SIGTERM from the kernel, and removes the folder that the
    dead parent would have removed."""
    from ccguard import constitution
    from ccguard.profiles import PROFILES
    from ccguard.sides import OutputSideJob

    job = OutputSideJob.for_run(constitution.load("cbrn"), PROFILES["smoke"], 0, smoke_run / "data",
                                tmp_path / "guard", "ab" * 32, quiet=True)
    (tmp_path / "job.json").write_text(job.to_json())
    script = ("import sys, time; from pathlib import Path; from ccguard.sides import OutputSideJob, OutputSideProcess\n"
              "p = OutputSideProcess(OutputSideJob.from_json(Path(sys.argv[1]).read_text()))\n"
              "print(p.input_done.parent, p._proc.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "job.json")], stdout=subprocess.PIPE,
                              text=True)
    try:
        folder, pid = parent.stdout.readline().split()
        folder = Path(folder)
        assert folder.is_dir() and folder.name.startswith("ccguard-sides-")
        deadline = time.monotonic() + 120
        while not int(_proc_field(pid, "SigCgt") or "0", 16) & (1 << (signal.SIGTERM - 1)):
            assert time.monotonic() < deadline, "the child never set its SIGTERM handler"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 60
    while folder.exists() or _proc_field(pid, "State") not in (None, "Z"):
        assert time.monotonic() < deadline, "the orphaned child kept running or left the folder"
        time.sleep(0.1)


def _proc_field(pid: str, name: str) -> str | None:
    """A field of /proc/PID/status (State's first letter), or None once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    value = next(line.split(":", 1)[1].strip() for line in lines if line.startswith(name + ":"))
    return value[0] if name == "State" else value
