"""One registry for every plugin kind: transforms, decoded views, LLM backends and classifiers.

Built-ins register with the same decorator third-party plugins use. Third-party packages expose modules through
the ``ccguard`` entry-point group; importing such a module registers its plugins.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, TypeVar

from ccguard.errors import CcguardError

F = TypeVar("F", bound=Callable[..., Any])

# Modules whose import registers the built-in plugins of each kind.
_BUILTIN_MODULES: dict[str, tuple[str, ...]] = {
    "transform": (
        "ccguard.transforms.encoding",
        "ccguard.transforms.style",
        "ccguard.transforms.framing",
        "ccguard.transforms.structure",
        "ccguard.transforms.keyword",
        "ccguard.transforms.llm",
    ),
    "view": ("ccguard.views",),
    "voice": ("ccguard.synth.voices",),
    "backend": ("ccguard.llm.local", "ccguard.llm.openai_compat", "ccguard.llm.anthropic"),
}


@dataclass(frozen=True)
class Entry:
    """A registered factory and what is known about it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.factory) or ""


class Registry:
    """Maps (kind, name) to factories. Lookups load built-ins and entry points on first use."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}
        self._loaded: set[str] = set()

    def register(self, kind: str, name: str, **meta: Any) -> Callable[[F], F]:
        """Decorator: register a factory under (kind, name). ``meta`` holds e.g. the transform family."""

        def deco(factory: F) -> F:
            key = (kind, name)
            old = self._entries.get(key)
            if old is not None and old.factory is not factory:
                raise ValueError(f"{kind} {name!r} is registered twice")
            self._entries[key] = Entry(kind, name, factory, dict(meta))
            return factory

        return deco

    def _load(self, kind: str) -> None:
        if kind in self._loaded:
            return
        self._loaded.add(kind)
        for mod in _BUILTIN_MODULES.get(kind, ()):
            importlib.import_module(mod)
        for ep in entry_points(group="ccguard"):
            ep.load()

    def names(self, kind: str) -> list[str]:
        self._load(kind)
        return sorted(n for k, n in self._entries if k == kind)

    def entries(self, kind: str) -> list[Entry]:
        return [self.get(kind, n) for n in self.names(kind)]

    def get(self, kind: str, name: str) -> Entry:
        self._load(kind)
        try:
            return self._entries[(kind, name)]
        except KeyError:
            known = ", ".join(self.names(kind)) or "none"
            raise CcguardError(f"unknown {kind} {name!r} (known: {known})") from None

    def create(self, kind: str, name: str, **args: Any) -> Any:
        """Build a plugin from its factory; the arguments are part of the plugin's recorded spec."""
        return self.get(kind, name).factory(**args)


REGISTRY = Registry()
register = REGISTRY.register
