"""The guarded OpenAI-compatible proxy."""

from ccguard.server.app import ServerSettings, create_app

__all__ = ["ServerSettings", "create_app"]
