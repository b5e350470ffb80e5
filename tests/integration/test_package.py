"""The distribution: a wheel builds, and `pip install` of it alone into a fresh venv gives a working Guard."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import importlib.metadata as md, sys
from ccguard import Guard
g = Guard.load(sys.argv[1])
v = g.check_input([{"role": "user", "content": [{"type": "text", "text": "How do I bake bread?"}]}])
o = g.check_output("How do I bake bread?", "Knead, rise, bake.")
*released, verdict = g.screen_stream("How do I bake bread?", ["Knead, ", "rise, bake."])
assert isinstance(v.allowed, bool) and o.stage == "output" and verdict.stage == "output"
print(md.version("ccguard-classifiers"), round(v.score, 6))
"""


def test_wheel_installs_alone_and_gives_a_working_guard(smoke_run: Path, smoke_guard, tmp_path: Path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(dist)], check=True,
                   capture_output=True, timeout=600)
    (wheel,) = dist.glob("ccguard_classifiers-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ccguard/py.typed" in names and "ccguard/constitutions/cbrn.yaml" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta and "Requires-Dist: torch<3,>=2.6" in meta

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py, ccguard = venv / "bin" / "python", venv / "bin" / "ccguard"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": ""}
    r = subprocess.run([str(py), "-c", CHECK, str(smoke_run / "guard")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    version, score = r.stdout.split()
    assert version == "0.1.0"
    assert abs(float(score) - smoke_guard.check_input("How do I bake bread?").score) < 1e-3
    # Commands that need an extra say which one, without a traceback.
    r = subprocess.run([str(ccguard), "serve", "--guard", str(smoke_run / "guard"), "--upstream", "http://127.0.0.1:9/v1"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "pip install 'ccguard-classifiers[server]'" in r.stderr and "Traceback" not in r.stderr
