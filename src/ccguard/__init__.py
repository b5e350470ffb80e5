"""ccguard: Constitutional Classifiers for LLM deployments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Constitution", "Guard", "OutputGate", "Policy", "Verdict", "load_constitution"]
__version__ = "0.1.0"
DIST = "ccguard-classifiers"  # the distribution name on the package index (the import name stays `ccguard`)

if TYPE_CHECKING:
    from ccguard.constitution import Constitution
    from ccguard.constitution import load as load_constitution
    from ccguard.guard import Guard
    from ccguard.policy import OutputGate, Policy, Verdict

_LAZY = {
    "Guard": ("ccguard.guard", "Guard"),
    "OutputGate": ("ccguard.policy", "OutputGate"),
    "Policy": ("ccguard.policy", "Policy"),
    "Verdict": ("ccguard.policy", "Verdict"),
    "Constitution": ("ccguard.constitution", "Constitution"),
    "load_constitution": ("ccguard.constitution", "load"),
}


def __getattr__(name: str) -> Any:
    # Re-exports resolve lazily so `import ccguard` (and `ccguard --help`) stays instant.
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'ccguard' has no attribute {name!r}")
