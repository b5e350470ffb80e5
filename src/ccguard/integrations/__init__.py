"""Hooks for the gateways and frameworks people already run, each over the same ``Guard`` decision path:

- :mod:`ccguard.integrations.litellm`: a LiteLLM guardrail (pre-call, post-call and streaming hooks);
- :mod:`ccguard.integrations.langchain`: a LangChain ``Runnable`` that guards any chat model or chain;
- :mod:`ccguard.integrations.scanners`: LLM-Guard-style prompt and output scanners.

Each module imports its framework when it is imported, never before (``pip install 'ccguard-classifiers[litellm]'``,
``'ccguard-classifiers[langchain]'``).
"""
