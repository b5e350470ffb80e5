"""``ccguard generate``: stage I data from an LLM backend (queries and responses), resumable and cached."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ccguard.cli import llm_options as o


def generate(
    backend: o.Backend = None,
    model: o.Model = None,
    base_url: o.BaseUrl = None,
    api_key_env: o.ApiKeyEnv = None,
    helpful_only: o.HelpfulOnly = None,
    llm_config: o.LLMConfigFile = None,
    no_cache: o.NoCache = False,
    constitution: Annotated[str, typer.Option(help="Bundled constitution name or path to a YAML file.")] = "cbrn",
    out: Annotated[Path | None, typer.Option(help="Output directory (default: runs/<constitution>/llm).")] = None,
    batches: Annotated[int, typer.Option(min=1, max=1000, help="Query requests per category.")] = 4,
    per_batch: Annotated[int, typer.Option(min=1, max=100, help="Queries asked for per request.")] = 10,
    responses: Annotated[int, typer.Option(min=0, max=10000, help="Queries per category that get responses.")] = 8,
    max_tokens: Annotated[int, typer.Option(min=16, max=32768, help="Most tokens per query request.")] = 800,
    response_max_tokens: Annotated[int, typer.Option(min=16, max=32768, help="Most tokens per response.")] = 400,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight at once.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed for prompt sampling and per-request sampling seeds.")] = 0,
    engine: Annotated[str, typer.Option(help="local (this process) or ray (requests spread over Ray actors, each with its "
                                             "own copy of the backend; RAY_ADDRESS, or a local Ray).")] = "local",
    workers: Annotated[int, typer.Option(min=1, max=1024, help="With --engine ray: actors. --concurrency still caps the "
                                                                "requests in flight across all of them.")] = 2,
) -> None:
    """Ask an LLM for diverse queries and responses per constitution category; dedupe and filter them.

    Writes queries.jsonl, exchanges.jsonl and manifest.json (tokens and cost included). Every request is journalled
    under jobs/, so a killed run continues where it stopped when re-run with the same arguments. With --engine ray
    the journal, the request cache and the records stay in this process; only the requests fan out.
    """
    from contextlib import ExitStack

    from rich.console import Console

    from ccguard import constitution as constitution_mod
    from ccguard.errors import CcguardError
    from ccguard.scale import check_engine
    from ccguard.synth.llm import LLMSynthConfig, contained, generate_llm_data

    if backend is None:
        raise CcguardError("ccguard generate needs --backend (local, openai, anthropic or a name from --llm-config)")
    check_engine(engine, workers)
    console = Console(stderr=True)
    const = constitution_mod.load(constitution)
    client = o.client_from_options(backend, model, base_url, api_key_env, helpful_only, llm_config, no_cache)
    cfg = LLMSynthConfig(seed=seed, batches_per_category=batches, queries_per_batch=per_batch,
                         responses_per_category=responses, max_tokens=max_tokens,
                         response_max_tokens=response_max_tokens, concurrency=concurrency)
    out_dir = out or Path("runs") / const.name / "llm"

    from tqdm.auto import tqdm

    from ccguard.llm.client import run_sync

    bar = tqdm(total=1, desc="llm requests", unit="req", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    contained(client, out_dir)
    with ExitStack() as stack:
        stack.callback(bar.close)
        if engine == "ray":
            from ccguard.scale import RayFanout, ray_session

            stack.enter_context(ray_session())
            client.backend = RayFanout(client.spec, workers)
            console.print(f"requests fan out over {workers} Ray workers, each with its own {client.spec.kind} backend")
        m = run_sync(client, lambda: generate_llm_data(const, client, cfg, out_dir, log=console.print, progress=progress))
    u = m["usage"]
    console.print(
        f"[bold green]done[/]: {m['queries']['kept']} queries ({m['queries']['raw_items']} generated, dropped "
        f"{m['queries']['dropped'] or 'none'}), {m['responses']['kept']} exchanges; {u['prompt_tokens']} prompt + "
        f"{u['completion_tokens']} completion tokens, ${u['cost_usd']:.4f}; cache hits this run: "
        f"{m['this_run']['cache_hits']}; -> {out_dir}"
    )
