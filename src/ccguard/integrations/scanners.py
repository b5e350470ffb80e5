"""LLM-Guard-style scanners: drop-in ``input_scanners`` and ``output_scanners`` for ``llm_guard.scan_prompt`` and
``llm_guard.scan_output``, or any pipeline that calls ``scan`` the same way.

``scan`` returns ``(text, is_valid, risk_score)``. ccguard never rewrites text, so ``text`` comes back unchanged
(the output scanner returns only the part the guard would have released when it blocks). ``risk_score`` follows
LLM Guard's convention: how far the score is past the threshold, scaled to [0, 1] (0 when valid).
"""

from __future__ import annotations

from ccguard.guard import Guard
from ccguard.policy import Verdict


def risk_score(v: Verdict) -> float:
    """0 when allowed; else (score - threshold) / (1 - threshold), rounded to one decimal and at least 0.1."""
    if v.allowed:
        return 0.0
    span = max(1e-9, 1.0 - v.threshold)
    return max(0.1, round(min(1.0, (v.score - v.threshold) / span), 1))


class CcguardPrompt:
    """Input scanner: ``scan(prompt) -> (prompt, is_valid, risk_score)``."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.last_verdict: Verdict | None = None

    def scan(self, prompt: str) -> tuple[str, bool, float]:
        v = self.last_verdict = self.guard.check_input(prompt)
        return prompt, v.allowed, risk_score(v)


class CcguardOutput:
    """Output scanner: ``scan(prompt, output) -> (output, is_valid, risk_score)``; a blocked output comes back cut
    where the guard halted it."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.last_verdict: Verdict | None = None

    def scan(self, prompt: str, output: str) -> tuple[str, bool, float]:
        v = self.last_verdict = self.guard.check_output(prompt, output)
        return (output if v.allowed else output[: v.stop_char or 0]), v.allowed, risk_score(v)
