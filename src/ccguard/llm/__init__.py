"""LLM backends: one async protocol (``generate`` and ``stream``) with thin sync wrappers."""

from ccguard.llm.base import Completion, GenerateParams, LLMBackend, Usage, create_backend

__all__ = ["Completion", "GenerateParams", "LLMBackend", "Usage", "create_backend"]
