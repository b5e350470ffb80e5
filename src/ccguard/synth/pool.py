"""The benign pool: everyday requests a general assistant receives (the paper's "pool set")."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ccguard.errors import CcguardError


class PoolItem(BaseModel):
    """One everyday request, with an optional helpful response."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str = Field(min_length=1, description="The request.")
    response: str | None = Field(default=None, description="A helpful response, when one was written.")


class PoolDomain(BaseModel):
    """Requests of one everyday domain (coding, cooking, travel, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(description="Domain id.")
    requests: list[PoolItem] = Field(min_length=1, description="The domain's requests.")


class BenignPool(BaseModel):
    """A named pool of everyday benign requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Pool name.")
    description: str = Field(default="", description="What the pool holds.")
    domains: list[PoolDomain] = Field(min_length=1, description="Domains of requests.")

    def pairs(self) -> list[tuple[str, str]]:
        """(request, response) pairs for requests that have a response."""
        return [(r.text, r.response) for d in self.domains for r in d.requests if r.response]


def load_pool(name_or_path: str) -> BenignPool:
    """Load a bundled pool by name (``everyday``) or a pool YAML by path."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise CcguardError("benign pool file not found", where=str(path))
        text = path.read_text(encoding="utf-8")
        where = str(path)
    else:
        res = resources.files("ccguard") / "data" / f"pool_{name_or_path}.yaml"
        if not res.is_file():
            raise CcguardError(f"no bundled benign pool named {name_or_path!r}")
        text, where = res.read_text(encoding="utf-8"), f"pool_{name_or_path}.yaml"
    try:
        return BenignPool.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as e:
        raise CcguardError(f"invalid benign pool: {str(e).splitlines()[0]}", where=where) from None
