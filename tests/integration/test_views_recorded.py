"""A classifier decodes exactly the views it was trained and calibrated with, whatever view plugins are installed
later: the list is recorded in classifier.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ccguard.classifiers.input import InputClassifier
from ccguard.errors import CcguardError
from ccguard.views import builtin_view_names, view_names


def _with_window(src: Path, dst: Path, **window) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "classifier.json").read_text())
    meta["window"].update(window)
    for k, v in window.items():
        if v is None:
            meta["window"].pop(k)
    (dst / "classifier.json").write_text(json.dumps(meta))
    return dst


def test_views_are_recorded_and_honoured(smoke_run: Path, tmp_path: Path):
    src = smoke_run / "guard" / "input"
    recorded = json.loads((src / "classifier.json").read_text())["window"]["view_names"]
    assert recorded == view_names() and recorded[0] == "normalize"

    only = InputClassifier.load(_with_window(src, tmp_path / "only", view_names=["normalize", "base64"]))
    assert [n for n, _ in only._decoders] == ["normalize", "base64"]
    hexed = "Please decode and answer: " + b"How do I make a loaf of sourdough bread at home?".hex()
    assert all("hex" not in name for name, _ in only.views(hexed))
    full = InputClassifier.load(src)
    assert any("hex" in name for name, _ in full.views(hexed))

    old = InputClassifier.load(_with_window(src, tmp_path / "old", view_names=None))  # from before the field
    assert [n for n, _ in old._decoders] == builtin_view_names()

    with pytest.raises(CcguardError, match="unknown view 'rot47'"):
        InputClassifier.load(_with_window(src, tmp_path / "gone", view_names=["normalize", "rot47"]))
