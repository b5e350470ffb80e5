"""The fast CPU runtime: int8 weights for both classifiers.

- **Input classifier.** The encoder and head are exported to ONNX with eager attention, so that ONNX Runtime's
  transformer optimizer can fuse attention, GELU and layer norms; then every MatMul weight is quantized to int8 per
  output channel, with activations quantized per call (dynamic quantization). The graph is built in memory from
  the safetensors weights when a guard loads: no ONNX file is ever read from an artifact.
- **Output classifier.** Dynamic int8 on every ``nn.Linear`` in torch. The KV-cached streaming path is unchanged,
  so the cost per token stays flat along a response.

int8 scores are approximate (a fine-tuned classifier's logits move by up to a few tenths, rarely more). So that
decisions stay those of the full-precision guard, the int8 models screen and the full-precision ones decide: a
prompt window, or an exchange, that int8 scores within ``margin`` logits of its threshold or above is scored again
in full precision (a stream switches to full precision from that chunk on). Everyday traffic scores far below its
threshold and never pays for the second pass. ``benchmarks/fast_path.py`` measures agreement with the fp32 guard and
how much traffic is scored twice.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ccguard.errors import CcguardError

Runtime = Literal["torch", "fast"]
RUNTIMES: tuple[str, ...] = ("torch", "fast")
# Logits below a threshold from which int8 scores are re-scored in full precision. Measured on the default guard's
# test split: int8 moves input window logits by 0.12 at the median and 0.8 at the 99th percentile, and output token
# logits by 0.17 and 1.9 (see benchmarks/fast_path.py).
INPUT_MARGIN = 2.0
OUTPUT_MARGIN = 3.0

# Backbone families whose attention ONNX Runtime's transformer optimizer knows how to fuse.
_ORT_FUSION = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert", "distilbert": "bert"}


def check_runtime(runtime: str, device: str | None = None) -> Runtime:
    """Validate a runtime name (and that it can run on ``device``)."""
    if runtime not in RUNTIMES:
        raise CcguardError(f"must be one of {', '.join(RUNTIMES)}, not {runtime!r}", where="runtime")
    if runtime == "fast" and device not in (None, "cpu"):
        raise CcguardError(f"the fast runtime is CPU-only; use runtime 'torch' on {device!r}", where="runtime")
    return runtime  # type: ignore[return-value]


class OnnxInputRunner:
    """Runs an exported, int8-quantized input model: ``(ids, mask) -> logits`` as numpy. Thread-safe."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)})[0]


def _require_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise CcguardError("the fast runtime needs onnxruntime: pip install 'ccguard-classifiers[fast]'", where="runtime") from None
    return onnxruntime


def build_input_runner(model: nn.Module, threads: int | None = None) -> OnnxInputRunner:
    """Export ``model`` (an ``InputModel``) to ONNX, fuse and quantize it, and open an ONNX Runtime session."""
    ort = _require_ort()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    config = model.encoder.config
    export = copy.deepcopy(model).eval()
    # Eager attention exports as plain MatMul/Softmax, the pattern the optimizer fuses into one Attention op. The
    # encoder is bidirectional, so its padding mask is additive and nothing leaks.
    export.encoder.set_attn_implementation("eager")
    ids = torch.randint(1000, 2000, (2, 16))
    mask = torch.ones_like(ids)
    with tempfile.TemporaryDirectory(prefix="ccguard-onnx-") as tmp:
        raw, fused, quant = (str(Path(tmp) / n) for n in ("raw.onnx", "fused.onnx", "int8.onnx"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                export, (ids, mask), raw, input_names=["input_ids", "attention_mask"], output_names=["logits"],
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                              "logits": {0: "batch"}},
                opset_version=17, dynamo=False,
            )
        family = _ORT_FUSION.get(getattr(config, "model_type", ""))
        if family is not None:
            from onnxruntime.transformers.optimizer import optimize_model

            opt = optimize_model(raw, model_type=family, num_heads=config.num_attention_heads,
                                 hidden_size=config.hidden_size)
            opt.save_model_to_file(fused)
        else:
            fused = raw
        # The quantizer logs advice at WARNING for every model; it is not actionable here.
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            quantize_dynamic(fused, quant, weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": 1})  # 1 = FLOAT, for outputs of fused ops
        finally:
            quiet.setLevel(level)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        session = ort.InferenceSession(quant, so, providers=["CPUExecutionProvider"])
    return OnnxInputRunner(session)


def exact_from(threshold: float, margin: float) -> float:
    """The score, ``margin`` logits below ``threshold``, from which int8 scores are re-scored in full precision."""
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    return float(1.0 / (1.0 + np.exp(-(np.log(t / (1.0 - t)) - margin))))


def use_fast_runtime(inp: Any, out: Any, input_threshold: float, output_threshold: float | None) -> None:
    """Switch loaded classifiers to int8 screening with full-precision decisions near their thresholds."""
    inp.runner = build_input_runner(inp.model)
    inp.exact_from = exact_from(input_threshold, INPUT_MARGIN)
    if out is not None and output_threshold is not None:
        out.exact_model = out.model
        out.model = quantize_output_model(out.model)
        out.exact_from = exact_from(output_threshold, OUTPUT_MARGIN)


def quantize_output_model(model: nn.Module) -> nn.Module:
    """Dynamic int8 on every linear layer of an ``OutputModel`` (a copy; the original is left as it is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice; the API is still the CPU int8 path in 2.13
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8).eval()
