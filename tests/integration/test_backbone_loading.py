"""Backbones load without Hub kernels.

transformers 5.2x turns ``use_kernels`` on by default: on CUDA the model's layers are then swapped for kernels fetched
from the Hub, which fails offline at the first ``.eval()`` (seen on an H200 after the input classifier's training) and
runs downloaded code online. The flag is the same on the CPU, so this checks it here.
"""

from __future__ import annotations

from ccguard.classifiers.backbone import load_encoder
from ccguard.classifiers.output import load_output_backbone


def test_the_input_encoder_is_loaded_without_hub_kernels() -> None:
    model = load_encoder("minilm", num_layers=1)
    assert model.use_kernels is False


def test_the_output_backbone_is_loaded_without_hub_kernels() -> None:
    model, causal = load_output_backbone("minilm", 1)
    assert causal is False
    assert model.use_kernels is False
