"""Linear probes on the local upstream's hidden states: training into the artifact, exact streaming features (no
extra forward pass), the ensemble in the output gate, and the proxy wiring. Real SmolLM2, real MiniLM guard."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from ccguard.guard import Guard
from ccguard.policy import OutputGate, Policy

LAYERS = (8, 30)


@pytest.fixture(scope="module")
def probed_guard_dir(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ccguard.probes import ProbeSpec
    from ccguard.train.probe import train_probe

    out = tmp_path_factory.mktemp("probed") / "guard"
    shutil.copytree(smoke_run / "guard", out)
    train_probe(out, smoke_run / "data", ProbeSpec(layers=LAYERS, max_tokens=32, window=4), n_train=16, n_val=16,
                n_test=8, seed=0)
    return out


def test_a_probe_is_a_stage_of_the_artifact(probed_guard_dir: Path, smoke_run: Path):
    g = Guard.load(probed_guard_dir)
    stage = g.manifest.stages["probe"]
    assert g.probe is not None and g.probe.spec.layers == LAYERS and stage["layers"] == list(LAYERS)
    assert g.policy.ensemble_threshold == stage["ensemble_threshold"] and g.policy.probe_weight == g.probe.spec.weight
    assert set(stage["metrics"]["test"]) >= {"classifier", "probe", "ensemble", "n"}
    assert (probed_guard_dir / "probe" / "probe.safetensors").is_file()
    # The guard without the stage still loads, with no probe.
    assert Guard.load(smoke_run / "guard").probe is None


def test_streaming_reads_the_same_hidden_states_as_a_full_pass(probed_guard_dir: Path):
    """The hooks read the generation's own states: the probe logits of a stream equal a teacher-forced pass over
    the generated tokens (the last token is never fed back, so it has none)."""
    import torch

    from ccguard.llm.base import GenerateParams, ProbeLogits
    from ccguard.llm.local import LocalBackend
    from ccguard.probes import response_features
    from ccguard.records import Message

    g = Guard.load(probed_guard_dir)
    backend = LocalBackend()
    backend.probe = g.probe
    prompt = "Name three fruits and say one thing about each."
    params = GenerateParams(max_tokens=24, temperature=0)

    async def collect() -> tuple[str, list[float]]:
        text, logits = "", []
        async for piece in backend.stream([Message(role="user", content=prompt)], params):
            if isinstance(piece, ProbeLogits):
                logits += piece.values
            text += piece
        return text, logits

    text, streamed = asyncio.run(collect())
    model, tok = backend._load()
    inputs = backend._inputs([Message(role="user", content=prompt)])
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)[0, inputs["input_ids"].shape[1]:]
    assert tok.decode(ids, skip_special_tokens=True) == text
    full = g.probe.logits(response_features(model, tok, prompt, ids.tolist(), LAYERS))
    assert len(streamed) == len(ids) - 1 > 10
    np.testing.assert_allclose(streamed, full[:-1], atol=2e-3)
    # Without a probe the stream is text only.
    backend.probe = None
    assert not any(isinstance(p, ProbeLogits) for p in asyncio.run(_pieces(backend, prompt, params)))


async def _pieces(backend, prompt, params):
    from ccguard.records import Message

    return [p async for p in backend.stream([Message(role="user", content=prompt)], params)]


def test_the_gate_decides_on_the_ensemble(smoke_guard):
    from ccguard.probes import ProbeTrack

    text = "Here is a plain answer about bread, dough and ovens, with a few more words to fill some chunks. " * 2
    # The classifier alone never flags (threshold at 1); the probe alone decides (weight 1, ensemble threshold 0.5).
    policy = Policy(input_threshold=0.5, output_threshold=1.0 - 1e-9, probe_weight=1.0, ensemble_threshold=0.5)
    assert policy.output_score(0.3, None) == 0.3
    for probe_logit, halts in ((4.0, True), (-4.0, False)):
        gate = OutputGate(smoke_guard.output_classifier.session("q"), policy, probe=ProbeTrack(4))
        gate.add_probe([probe_logit] * 3)
        gate.feed(text)
        gate.finish()
        assert gate.halted == halts and (gate.stop_char == 0 if halts else gate.releasable() == text)
    # A gate without a probe track ignores probe logits.
    gate = OutputGate(smoke_guard.output_classifier.session("q"), policy)
    gate.add_probe([9.0])
    gate.feed(text)
    gate.finish()
    assert not gate.halted


def test_the_proxy_feeds_the_local_upstreams_probe_to_the_gate(probed_guard_dir: Path):
    from ccguard.llm.local import LocalBackend
    from ccguard.server.app import create_app
    from ccguard.server.loopback import serving

    g = Guard.load(probed_guard_dir)
    # Only the probe can flag: the classifier's threshold is 1, the ensemble is the probe alone at a tiny threshold.
    g.policy = g.policy.model_copy(update={"output_threshold": 1.0 - 1e-9, "probe_weight": 1.0, "ensemble_threshold": 1e-9})
    body = {"model": "local", "stream": True, "max_tokens": 24, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell me a short story about a cat."}]}
    finishes = []
    for attach in (True, False):
        backend = LocalBackend()
        backend.probe = g.probe if attach else None
        with serving(create_app(g, backend)) as url, httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
            assert r.status_code == 200
            finishes.append([line for line in r.iter_lines() if '"finish_reason":"' in line.replace(" ", "")][-1])
    assert "content_filter" in finishes[0] and "content_filter" not in finishes[1]
