"""One registry for every plugin kind (:data:`KINDS`): prompt transforms, LLM transforms, decoded views, response
voices, LLM backends, evaluation baselines and classifier backbones.

Built-ins and third-party plugins are found the same way: a package declares, for each kind, modules in the
entry-point group ``ccguard.<kind>`` (ccguard's own are in its ``pyproject.toml``), and importing such a module
registers its plugins with :func:`register`. The first lookup of a kind loads its group. The older catch-all group
``ccguard`` is loaded too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, TypeVar

from ccguard.errors import CcguardError

F = TypeVar("F", bound=Callable[..., Any])

# Every kind and what its factories return; ccguard ships built-ins of each.
KINDS = {
    "transform": "a prompt transform (ccguard.transforms.base.Transform), built with its recorded arguments",
    "llm_transform": "a transform that asks an LLM backend (ccguard.transforms.llm.LLMTransform)",
    "view": "a decoder: text -> decoded text, or None when it does not apply (ccguard.views)",
    "voice": "a response voice: re-voices a seed answer in a style (ccguard.synth.voices)",
    "backend": "an LLM backend (ccguard.llm.base.LLMBackend)",
    "baseline": "an evaluation baseline: BaselineContext -> a scorer with .score(texts) (ccguard.evaluate.baselines)",
    "backbone": "a classifier backbone: () -> a local path or hub id for from_pretrained (ccguard.classifiers.backbone)",
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
        self._failed: dict[str, list[str]] = {}  # kind -> plugin modules that could not be imported, and why

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
        found = list(entry_points(group=f"ccguard.{kind}"))
        if kind in KINDS and not found:
            raise CcguardError(f"no {kind} plugins are installed: the ccguard.{kind} entry points are missing, so the "
                               "package metadata is stale; reinstall it (pip install -e . in a checkout)")
        failed = []
        for ep in [*found, *entry_points(group="ccguard")]:
            try:
                ep.load()
            except Exception as e:  # noqa: BLE001 - e.g. a missing optional dependency: that plugin is out, the rest work
                optional = isinstance(e, ModuleNotFoundError) and not (e.name or "").startswith("ccguard")
                if ep.value.startswith("ccguard.") and not optional:
                    raise  # a bug in ccguard's own plugins must not quietly switch them off
                failed.append(f"{ep.value} ({type(e).__name__}: {e})")
        self._failed[kind] = failed
        self._loaded.add(kind)  # only once every entry point has been tried

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
            failed = self._failed.get(kind)
            hint = f"; plugin modules that failed to import: {'; '.join(failed)}" if failed else ""
            raise CcguardError(f"unknown {kind} {name!r} (known: {known}){hint}") from None

    def create(self, kind: str, name: str, **args: Any) -> Any:
        """Build a plugin from its factory; the arguments are part of the plugin's recorded spec."""
        return self.get(kind, name).factory(**args)


REGISTRY = Registry()
register = REGISTRY.register
