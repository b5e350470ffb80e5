"""An exchange longer than the backbone's positions trains truncated, not with a crash (real MiniLM, 512 positions)."""

from __future__ import annotations

from dataclasses import replace

from ccguard.profiles import PROFILES
from ccguard.records import Example


def test_the_full_profiles_output_lengths_fit_the_backbone():
    """The full profile asks for 128 prompt and 384 response tokens; the context's special tokens made that 516
    positions, and the first long exchange stopped training (found on a GPU run)."""
    from ccguard.train.output import train_output

    long_prompt = "Tell me about the history of chemical weapons treaties and their verification. " * 20
    long_answer = "The convention entered into force after years of negotiation, and inspections followed. " * 40
    rows = [Example(id=f"e{i}", prompt=long_prompt, response=long_answer, label=y, group=f"g{i}", split="train",
                    category="agent_synthesis" if y == "harmful" else None, source="seed")
            for i, y in enumerate(["harmful", "harmless"])]  # fmt: skip
    full = PROFILES["full"].output_train
    assert full.prompt_tokens + full.response_tokens >= 512
    args = replace(full, num_layers=1, max_steps=1, batch_size=2, precision="no")
    clf, stats = train_output(rows, args)
    assert stats["steps"] == 1
    assert clf.spec.max_positions == 512
