"""Report plots (matplotlib, headless). Each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _figure(**kw: Any) -> Any:
    """A figure outside pyplot: drawn by its own Agg canvas, so no global backend is set and nothing is left open in
    the caller's pyplot state (or its notebook)."""
    from matplotlib.figure import Figure

    return Figure(**kw)


def roc_curves(path: Path, title: str, labels: np.ndarray, scores: dict[str, np.ndarray]) -> Path:
    from sklearn.metrics import roc_curve

    fig = _figure(figsize=(6, 5))
    ax = fig.subplots()
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(labels, s)
        ax.plot(np.maximum(fpr, 1e-4), tpr, label=name, lw=2 if name == "ccguard" else 1.2)
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(0, 1.01)
    ax.axvline(0.01, color="grey", ls=":", lw=1)
    ax.set_xlabel("false-positive rate (log)")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def histograms(path: Path, sets: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float) -> Path:
    n = len(sets)
    fig = _figure(figsize=(7, 1.9 * n + 0.6))
    axes = fig.subplots(n, 1, squeeze=False)
    bins = np.linspace(0, 1, 41)
    for ax, (name, (y, s)) in zip(axes[:, 0], sets.items(), strict=True):
        if (y == 0).any():
            ax.hist(s[y == 0], bins=bins, alpha=0.6, label="harmless", color="tab:blue")
        if (y == 1).any():
            ax.hist(s[y == 1], bins=bins, alpha=0.6, label="harmful", color="tab:red")
        ax.axvline(threshold, color="black", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("ccguard score (dashed: threshold)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def family_bars(path: Path, rows: dict[str, tuple[float, float]]) -> Path:
    """rows: family -> (harmful block rate, harmless block rate)."""
    names = list(rows)
    x = np.arange(len(names))
    fig = _figure(figsize=(max(6, 0.6 * len(names) + 2), 4))
    ax = fig.subplots()
    ax.bar(x - 0.2, [rows[n][0] for n in names], 0.4, label="harmful blocked", color="tab:red")
    ax.bar(x + 0.2, [rows[n][1] for n in names], 0.4, label="harmless blocked", color="tab:blue")
    ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("block rate")
    ax.set_title("Block rate per transform family")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def threshold_tradeoff(path: Path, labels: np.ndarray, scores: np.ndarray, threshold: float, title: str) -> Path:
    """FPR and TPR against the threshold (logit axis) for one labelled set."""
    rates = {"FPR (harmless flagged)": scores[labels == 0], "TPR (harmful flagged)": scores[labels == 1]}
    return calibration_tradeoff(path, rates, threshold, title)


def calibration_tradeoff(path: Path, rates: dict[str, np.ndarray], threshold: float, title: str) -> Path:
    """Flagged rate of each score set against the threshold, on a logit axis so the region near 1.0, where
    thresholds live, is readable. ``rates`` maps a label ('everyday FPR', 'hard-neighbour FPR', 'TPR') to scores."""
    eps = 1e-6
    grid = 1.0 / (1.0 + np.exp(-np.linspace(-2, 12, 400)))
    fig = _figure(figsize=(7, 4))
    ax = fig.subplots()
    for (name, scores), color in zip(rates.items(), ("tab:blue", "tab:orange", "tab:red", "tab:green"), strict=False):
        if len(scores):
            ax.plot(np.log(grid / (1 - grid)), [(scores > t).mean() for t in grid], label=name, color=color)
    t = min(max(threshold, eps), 1 - eps)
    ax.axvline(np.log(t / (1 - t)), color="black", ls="--", lw=1, label=f"threshold {threshold:.4f}")
    ticks = np.array([0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999])
    ax.set_xticks(np.log(ticks / (1 - ticks)), [f"{x:g}" for x in ticks])
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("threshold (logit scale)")
    ax.set_ylabel("flagged rate")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
