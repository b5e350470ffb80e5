"""``ccguard serve``: the guarded OpenAI-compatible proxy."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ccguard.errors import CcguardError


def load_api_keys(spec: str | None) -> frozenset[str]:
    """Keys from a file (one per line) or an environment variable (comma-separated)."""
    if not spec:
        return frozenset()
    p = Path(spec)
    if p.is_file():
        keys = [line.strip() for line in p.read_text().splitlines()]
    elif spec in os.environ:
        keys = [k.strip() for k in os.environ[spec].split(",")]
    else:
        raise CcguardError(f"--api-keys {spec!r} is neither a file nor a set environment variable")
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:
        raise CcguardError(f"--api-keys {spec!r} holds no keys")
    return frozenset(keys)


def make_upstream(guard: Any, upstream: str, upstream_model: str | None, key_env: str, timeout: float,
                  slots: int | None) -> tuple[Any, int]:
    """The upstream backend for ``--upstream URL|local[:MODEL]`` and its slot count (1 for a local model: a CPU runs
    one local generation at a time; 8 for a URL)."""
    from ccguard.llm.base import create_backend

    local = upstream == "local" or upstream.startswith("local:")
    n_slots = slots or (1 if local else 8)
    if local:
        backend = create_backend("local", model=upstream.partition(":")[2] or "smollm2")
        if guard.probe is not None and guard.probe.spec.upstream == backend.model:
            backend.probe = guard.probe  # the upstream's own hidden states feed the probe ensemble
    elif upstream.startswith(("http://", "https://")):
        backend = create_backend("openai", model=upstream_model or "default", base_url=upstream,
                                 api_key=os.environ.get(key_env), timeout=timeout, concurrency=n_slots)
    else:
        raise CcguardError(f"--upstream must be an http(s) URL or local[:MODEL], not {upstream!r}")
    return backend, n_slots


def json_logging() -> None:
    """ccguard's loggers write one JSON object per line to stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter())
    logging.getLogger("ccguard").handlers[:] = [handler]
    logging.getLogger("ccguard").setLevel(logging.INFO)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        try:
            body = json.loads(msg)
        except json.JSONDecodeError:
            body = {"message": msg}
        return json.dumps({"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name, **body})


def serve(
    guard: Annotated[str, typer.Option(help="Guard artifact directory, or a Hub repo id (hf://org/name, or org/name when no such local path exists).")],
    upstream: Annotated[str, typer.Option(help="OpenAI-compatible base URL (…/v1), or local[:MODEL].")] = "local",
    host: Annotated[str, typer.Option(help="Bind address. Beyond loopback, --api-keys is required.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_keys: Annotated[str | None, typer.Option(help="File with one key per line, or an env var of comma-separated keys.")] = None,
    upstream_key_env: Annotated[str, typer.Option(help="Env var holding the upstream's API key.")] = "OPENAI_API_KEY",
    upstream_model: Annotated[str | None, typer.Option(help="Default upstream model id.")] = None,
    fail_open: Annotated[bool, typer.Option(help="Let traffic through when a classifier fails (default: block).")] = False,
    log_prompts: Annotated[bool, typer.Option(help="Include prompt text in logs.")] = False,
    upstream_timeout: Annotated[float, typer.Option(help="Seconds to wait on the upstream (per stream event).")] = 60.0,
    slots: Annotated[int | None, typer.Option(min=1, help="Upstream requests in flight at once (default: 1 for local, 8 for a URL).")] = None,
    slot_timeout: Annotated[float, typer.Option(help="Longest wait for a free upstream slot before a 503.")] = 10.0,
    screen_timeout: Annotated[float, typer.Option(help="Time budget for screening one request's input (then a 503).")] = 15.0,
    max_stream_lag: Annotated[float, typer.Option(min=0.01, help="Shed new requests (503) while admitted streams' pieces wait this many seconds in the proxy (median over streams).")] = 0.5,
    runtime: Annotated[str, typer.Option(help="Classifier runtime: torch, or fast (int8 on the CPU; pip install 'ccguard-classifiers[fast]').")] = "torch",
    device: Annotated[str | None, typer.Option(help="Torch device for the classifiers (cpu, cuda, cuda:1 ...).")] = None,
    history_margin: Annotated[float | None, typer.Option(min=0.0, help="Logits by which earlier turns of a conversation are judged more strictly than its newest request (default: the guard's, else 1.5; see benchmarks/multi_turn.py).")] = None,
) -> None:
    """Serve /v1/chat/completions, /v1/models, /v1/moderations, /healthz and /metrics in front of an LLM."""
    keys = load_api_keys(api_keys)
    from ccguard.server.app import require_key_if_exposed

    require_key_if_exposed(host, keys)
    import uvicorn

    from ccguard.guard import Guard
    from ccguard.server import ServerSettings, create_app

    json_logging()
    g = Guard.from_pretrained(guard, device=device, runtime=runtime)
    if history_margin is not None:
        g.policy = g.policy.model_copy(update={"history_margin": history_margin})
    backend, n_slots = make_upstream(g, upstream, upstream_model, upstream_key_env, upstream_timeout, slots)
    settings = ServerSettings(api_keys=keys, fail_open=fail_open, log_prompts=log_prompts, upstream_timeout=upstream_timeout,
                              slots=n_slots, slot_timeout=slot_timeout, screen_timeout=screen_timeout,
                              max_stream_lag=max_stream_lag, model_name=upstream_model or "ccguard")
    app = create_app(g, backend, settings)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)
