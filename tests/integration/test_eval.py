"""`ccguard eval` on the smoke run: every report section, plots, baselines, and the HTML in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def eval_report(smoke_run: Path, tmp_path_factory) -> tuple[Path, dict, float]:
    from rich.console import Console

    from ccguard.evaluate.runner import run_eval
    from ccguard.evaluate.suite import load_suite

    out = tmp_path_factory.mktemp("eval")
    t0 = time.perf_counter()
    rep = run_eval(smoke_run / "guard", [load_suite("synthetic"), load_suite("dev")], out, max_items=40,
                   console=Console(stderr=True, quiet=True))
    return out, rep, time.perf_counter() - t0


def test_report_has_every_section(eval_report):
    out, rep, secs = eval_report
    for f in ("report.json", "report.md", "report.html"):
        assert (out / f).is_file()
    syn = rep["suites"]["synthetic"]
    composed = syn["jailbreak_composed"]
    assert {"ccguard", "keyword", "tfidf_lr", "minilm_lr", "no_augmentation"} <= set(composed)
    c = composed["ccguard"]
    assert c["auroc"] is not None and set(c["tpr_at_fpr"]) == {"0.001", "0.01", "0.05"}
    assert c["flagged"]["lo"] <= c["flagged"]["rate"] <= c["flagged"]["hi"]
    assert len(c["by_family"]) > 1
    assert "median_released_fraction" in syn["test_exchanges"]["ccguard"]
    assert syn["_latency_input"]["p50_ms"] > 0
    assert 0 < rep["overhead"]["flops_ratio"] < 1
    assert "skipped" in rep["rubric"] and "## Rubric grading" in (out / "report.md").read_text()
    md = (out / "report.md").read_text()
    for heading in ("## Suite `synthetic`", "### jailbreak_composed", "## Compute overhead", "transform family"):
        assert heading in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert any(p.startswith("roc_") for p in pngs) and any(p.startswith("hist_") for p in pngs)
    assert any(p.startswith("families_") for p in pngs) and any(p.startswith("tradeoff_") for p in pngs)


def test_dev_suite_runs_or_skips_clearly(eval_report):
    from tests.conftest import DEV_DATA

    _, rep, _ = eval_report
    if DEV_DATA.is_dir():
        assert "dev" in rep["suites"] and "cbrn_harmful" in rep["suites"]["dev"]
    else:
        assert "not found" in rep["skipped"]["dev"]


def test_eval_report_json_is_valid_and_cli_errors_are_clean(eval_report, smoke_run: Path, tmp_path: Path):
    out, _, _ = eval_report
    json.loads((out / "report.json").read_text())
    import sys

    r = subprocess.run([sys.executable, "-m", "ccguard.cli", "eval", "--guard", str(smoke_run / "guard"), "--suite", "nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no bundled suite" in r.stderr and "Traceback" not in r.stderr


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None and not os.environ.get("CCGUARD_REQUIRE_CHROMIUM"), reason="no chromium installed")
def test_html_report_renders_plots_in_headless_chromium(eval_report, tmp_path: Path):
    from matplotlib import image

    out, _, _ = eval_report
    browser = _chromium()
    assert browser, "CCGUARD_REQUIRE_CHROMIUM is set but chromium is missing"
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1400", f"--screenshot={shot}",
           (out / "report.html").as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium produced no screenshot"
    px = image.imread(str(shot))[..., :3]
    non_white = (px.min(axis=-1) < 0.9).mean()
    # Plots are drawn: a real share of the page is ink, and the red/blue of the curves and bars is there.
    red = ((px[..., 0] > 0.7) & (px[..., 1] < 0.35) & (px[..., 2] < 0.35)).sum()
    blue = ((px[..., 2] > 0.6) & (px[..., 0] < 0.35)).sum()
    assert non_white > 0.02 and red > 200 and blue > 200
