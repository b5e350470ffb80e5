"""A standardised linear head over frozen features, stored as safetensors: the shared part of probes and the
cascade's second stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ccguard.errors import CcguardError


class LinearHead:
    """``logit = ((x - mean) / scale) @ weight + bias``."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, weight: np.ndarray, bias: float) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)
        self.weight = np.asarray(weight, dtype=np.float32)
        self.bias = float(bias)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, c: float) -> LinearHead:
        """A class-balanced, L2-regularised logistic regression on standardised features."""
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(x, dtype=np.float32)
        mean, scale = x.mean(0), x.std(0) + 1e-6
        lr = LogisticRegression(C=c, max_iter=1000, class_weight="balanced")
        lr.fit((x - mean) / scale, y)
        return cls(mean, scale, lr.coef_[0], float(lr.intercept_[0]))

    def logits(self, feats: np.ndarray) -> np.ndarray:
        """Logits for features ``[n, d]``."""
        return ((np.asarray(feats, dtype=np.float32) - self.mean) / self.scale) @ self.weight + self.bias

    def save(self, path: Path) -> None:
        """Written to a temporary file and renamed, so a crash never leaves a half-written head."""
        import os

        from safetensors.numpy import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
        save_file({"mean": self.mean, "scale": self.scale, "weight": self.weight,
                   "bias": np.array([self.bias], dtype=np.float32)}, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            t = load_file(str(path))
            head = cls(t["mean"], t["scale"], t["weight"], float(t["bias"][0]))
        except (OSError, KeyError, IndexError, SafetensorError) as e:
            raise CcguardError(f"not a linear head ({e})", where=str(path)) from None
        if not (head.mean.shape == head.scale.shape == head.weight.shape and head.weight.ndim == 1):
            raise CcguardError("linear head tensors have mismatched shapes", where=str(path))
        return head
